"""torchrun on the CPU (gloo, 2 processes): the same losses, weights and neighbours as one process."""
import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from easydict import EasyDict

import scan
import selflabel
import simclr
from conftest import ROOT, DIGITS_CFG, write_env
from losses.simclr import SimCLRLoss
from neighbors.search import search
from utils import distributed

pytestmark = pytest.mark.skipif(not dist.is_available(), reason='torch.distributed is not available')

TINY = ['epochs=2', 'train_subset=128', 'val_subset=128', 'backbone_kwargs.widths=[8, 16, 16, 16]', 'device=cpu',
        'sync_bn=true']


def _in_processes(fn, world, *args):
    """fn(rank, *args) in `world` gloo processes; returns what rank 0 returned."""
    ctx = mp.get_context('spawn')
    queue = ctx.SimpleQueue()
    with socket.socket() as free:  # a port nobody holds, not even a previous test's store in TIME_WAIT
        free.bind(('127.0.0.1', 0))
        port = free.getsockname()[1]
    procs = [ctx.Process(target=_worker, args=(fn, r, world, port, queue, args)) for r in range(world)]
    for p in procs:
        p.start()
    out = queue.get()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    return out


def _worker(fn, rank, world, port, queue, args):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    dist.init_process_group('gloo')
    out = fn(rank, *args)
    if rank == 0:
        queue.put(out)
    dist.destroy_process_group()


def _ntxent_grads(rank, z):
    """DDP's averaged gradient of NT-Xent on gathered projections; this process holds rows [rank b/2, ...)."""
    layer = torch.nn.Linear(z.shape[-1], 8, bias=False)
    layer.weight.data.copy_(torch.linspace(-1, 1, layer.weight.numel()).view_as(layer.weight))
    net = distributed.wrap(layer, {}, torch.device('cpu'))
    part = distributed.local_part(len(z))
    out = torch.nn.functional.normalize(net(z[part]), dim=-1)
    loss = SimCLRLoss(0.5, True)(distributed.gather(out))['total']
    loss.backward()
    return loss.item(), layer.weight.grad.clone()


def test_gathered_ntxent_equals_one_process():
    z = torch.randn(16, 2, 6, generator=torch.Generator().manual_seed(0))
    one = _ntxent_grads(0, z)
    two = _in_processes(_ntxent_grads, 2, z)
    assert two[0] == pytest.approx(one[0], rel=1e-6)
    assert torch.allclose(two[1], one[1], atol=1e-6)


def _sharded_search(rank, base, queries):
    return search(base, queries, 7, backend='torch')


def test_distributed_mining_returns_the_same_neighbors():
    g = torch.Generator().manual_seed(1)
    base = torch.nn.functional.normalize(torch.randn(101, 16, generator=g), dim=1)
    queries = base[:40]
    sims, idx = search(base, queries, 7, backend='torch')
    two_sims, two_idx = _in_processes(_sharded_search, 2, base, queries)
    assert np.array_equal(idx, two_idx) and np.allclose(sims, two_sims, atol=1e-6)


# --- every training stage under torchrun ---------------------------------------------------------------------------

def torchrun(*args, processes=2):
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={processes}', *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def losses(folder):
    return [r['loss'] for r in map(json.loads, open(folder / 'log.jsonl')) if 'epoch' not in r or r['epoch'] > 0]


def assert_same_run(a, b, model='model.pth.tar'):
    assert None not in losses(a) and losses(a) == pytest.approx(losses(b), rel=1e-4)
    wa, wb = torch.load(a / model, weights_only=True), torch.load(b / model, weights_only=True)
    wa, wb = wa.get('model', wa), wb.get('model', wb)
    for k in wa:
        assert torch.allclose(wa[k].float(), wb[k].float(), atol=2e-4), k


STAGES = {
    'simclr': (DIGITS_CFG, 'pretext', ['batch_size=64', 'knn_every=1']),
    'scan': (os.path.join(ROOT, 'configs', 'scan', 'nnm_digits.yml'), 'scan', ['batch_size=32', 'num_heads=2']),
    'selflabel': (os.path.join(ROOT, 'configs', 'selflabel', 'selflabel_digits.yml'), 'selflabel',
                  ['batch_size=32', 'confidence_threshold=0.11', 'scan_folder=scan']),
}


@pytest.fixture(scope='module')
def clustered(tmp_path_factory):
    """A tiny pretext run and an NNM run on it (one process), copied into each test's root."""
    root = tmp_path_factory.mktemp('clustered')
    env = write_env(root, data_root=root)
    simclr.main(['--config_env', env, '--config_exp', DIGITS_CFG, *TINY, *STAGES['simclr'][2], 'epochs=1'])
    scan.main(['--config_env', env, '--config_exp', STAGES['scan'][0], *TINY, *STAGES['scan'][2], 'epochs=1'])
    return root / 'results' / 'digits'


@pytest.mark.parametrize('stage', list(STAGES))
def test_two_processes_follow_one_and_resume_on_one(tmp_path, clustered, stage):
    config, folder, extra = STAGES[stage]
    runs = {}
    for name in ('one', 'two', 'resumed'):
        shutil.copytree(clustered, tmp_path / name / 'results' / 'digits')
        shutil.rmtree(tmp_path / name / 'results' / 'digits' / folder, ignore_errors=True)
        runs[name] = (write_env(tmp_path / name, data_root=tmp_path), tmp_path / name / 'results' / 'digits' / folder)
    args = lambda name: ['--config_env', runs[name][0], '--config_exp', config, *TINY, *extra]  # noqa: E731
    module = {'simclr': simclr, 'scan': scan, 'selflabel': selflabel}[stage]
    module.main(args('one'))

    done = torchrun(f'{stage}.py', *args('two'))
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same_run(runs['one'][1], runs['two'][1])

    # two processes stopped in epoch 2, continued by one process
    stopped = torchrun(os.path.join('tests', 'helpers', 'interrupted.py'), stage, '2', *args('resumed'))
    assert stopped.returncode != 0 and 'continue with --resume' in stopped.stderr
    assert len(losses(runs['resumed'][1])) == 1
    module.main(args('resumed') + ['--resume'])
    assert_same_run(runs['one'][1], runs['resumed'][1])


# --- the frozen-trunk pipeline on cached features ------------------------------------------------------------------

def test_cached_feature_pipeline_in_two_processes_as_in_one(tmp_path):
    """configs/image_folder_pretrained.yml (setup: pretrained, cached features, num_classes: auto) under torchrun with
    two gloo processes: each extracts its shard of the features and searches its shard of the index, the clustering
    and self-label stages train on their shares of every batch of cached vectors; the neighbours, the K estimate and
    the heads are those of one process."""
    from benchmarks.digits_folder import write_digits
    from models import get_backbone
    tiny_vit = {'img_size': 16, 'patch_size': 8, 'embed_dim': 24, 'depth': 2, 'num_heads': 2}
    torch.manual_seed(0)
    vit = get_backbone(EasyDict(backbone='timm/vit_small_patch16_224', backbone_kwargs=tiny_vit, channels=3))
    torch.save(vit['backbone'].state_dict(), tmp_path / 'vit.pth')
    folder = tmp_path / 'photos'
    write_digits(str(folder), size=16, classes=[0, 1, 7], limit=48)
    config = os.path.join(ROOT, 'configs', 'image_folder_pretrained.yml')
    outputs = {}
    for name in ('one', 'two'):
        (tmp_path / name).mkdir()
        env = write_env(tmp_path / name, data_root=tmp_path)
        args = ['--config_env', env, '--config_exp', config, f'db_kwargs.path={folder}', 'db_kwargs.image_size=16',
                'device=cpu', 'num_workers=0', 'backbone=timm/vit_small_patch16_224', 'backbone_kwargs={}',
                f'backbone_kwargs={tiny_vit}', f'backbone_weights={tmp_path / "vit.pth"}', 'clustering.k_range=[2, 5]',
                'clustering.epochs=2', 'clustering.batch_size=16', 'clustering.num_heads=2', 'selflabel.epochs=2',
                'selflabel.batch_size=16']
        for stage in ('simclr', 'scan', 'selflabel'):
            if name == 'one':
                {'simclr': simclr, 'scan': scan, 'selflabel': selflabel}[stage].main(args)
            else:
                done = torchrun(f'{stage}.py', *args)
                assert done.returncode == 0, f'{stage} under torchrun failed:\n{done.stderr[-4000:]}'
        outputs[name] = tmp_path / name / 'results' / 'photos'
    one, two = outputs['one'], outputs['two']
    for split in ('train', 'val'):
        a, b = (np.load(out / 'pretext' / f'topk-{split}-neighbors.npy') for out in (one, two))
        assert np.array_equal(a, b)
    k = [json.load(open(out / 'scan' / 'metrics.json'))['num_classes'] for out in (one, two)]
    assert k[0] == k[1] and 2 <= k[0] <= 5
    for stage in ('scan', 'selflabel'):  # the last epoch's weights (the model files may keep an earlier epoch)
        assert_same_run(one / stage, two / stage, 'checkpoint.pth.tar')
