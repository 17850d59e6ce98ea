"""What a new user meets on the README's own paths: its commands as written, errors that name the file,
transparent images, and the report's images, numbers and axes."""
import os
import re
import shutil
import subprocess
import warnings

import numpy as np
import pytest
from PIL import Image, ImageDraw

import simclr
from conftest import ROOT
from data import build_dataset
from data.base import BACKGROUND, FileDataset

VENV_PYTHON = os.path.join(ROOT, '.venv', 'bin', 'python')


def page_commands(page):
    """The first bash block of a docs page, its continued lines joined."""
    text = open(os.path.join(ROOT, 'docs', page)).read()
    block = re.search(r'```bash\n(.*?)```', text, re.S).group(1)
    lines = block.replace('\\\n', ' ').splitlines()
    return [re.sub(r'\s+#.*$', '', line).strip() for line in lines if line.strip()]


def icon(shape, size, colour, mode):
    """A shape on a transparent canvas (mode RGBA, LA or P with a transparent index), like an icon theme's."""
    img = Image.new('RGBA', (size, size), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    box = (size // 5, size // 5, size - size // 5, size - size // 5)
    (draw.ellipse if shape == 'circle' else draw.rectangle)(box, fill=colour + (255,))
    if mode == 'LA':
        return img.convert('LA')
    if mode == 'P':
        return img.convert('P', palette=Image.ADAPTIVE, colors=8)  # PIL keeps the transparent index
    return img


def write_icon_folder(folder):
    """Two labelled classes of transparent icons in mixed sizes and formats, and a file that is no image."""
    rng = np.random.default_rng(0)
    for name, shape, colour in (('circles', 'circle', (200, 30, 30)), ('squares', 'square', (30, 30, 200))):
        (folder / name).mkdir(parents=True)
        for i in range(24):
            size = int(rng.integers(20, 90))
            img = icon(shape, size, colour, ('RGBA', 'P', 'LA')[i % 3])
            if i % 4 == 3:
                img.convert('RGB').save(folder / name / f'{i}.jpg')
            else:
                img.save(folder / name / f'{i}.png')
    (folder / 'circles' / 'notes.txt').write_text('not an image')


def test_own_images_commands_run_as_written_after_run_sh(tmp_path):
    """The small-CNN template's commands of docs/own-images.md, word for word (DIR and NAME filled in), in a copy of
    the tracked files beside the .venv that ./run.sh made: the four stages finish and write the report and the
    predictions."""
    commands = page_commands('own-images.md')
    assert len(commands) == 4 and all(c.startswith('./run.sh ') for c in commands), commands
    if not os.path.isfile(VENV_PYTHON):
        pytest.skip('no .venv: ./run.sh has not been run in this checkout')
    clone = tmp_path / 'clone'
    try:
        tracked = subprocess.run(['git', 'ls-files', '-z'], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip('not a git checkout: the tracked files are unknown')
    for name in tracked.decode().split('\0'):
        if name and os.path.isfile(os.path.join(ROOT, name)):
            os.makedirs(clone / os.path.dirname(name), exist_ok=True)
            shutil.copy2(os.path.join(ROOT, name), clone / name)
    os.symlink(os.path.join(ROOT, '.venv'), clone / '.venv')
    folder = tmp_path / 'icons'
    write_icon_folder(folder)
    outputs = []
    for command in commands:
        filled = command.replace('DIR', str(folder)).replace('results/NAME', 'results/icons')
        done = subprocess.run(['bash', '-c', filled], cwd=clone, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, (filled, done.stderr[-2000:])
        outputs.append(done.stdout)
    assert 'skipped 1 file(s) that are not images (.txt' in outputs[0]
    run = clone / 'results' / 'icons' / 'selflabel'
    assert (run / 'report.html').is_file() and (run / 'eval.json').is_file()
    assert f"predictions of 48 images: {run / 'predictions_icons.csv'}" in outputs[3]


@pytest.mark.parametrize('mode', ['RGBA', 'P', 'LA'])
def test_transparency_is_composited_as_the_same_image_flattened(tmp_path, mode):
    """An icon with transparency decodes (for training and for the report) to the same pixels as the image
    composited onto the background and saved without transparency; PIL warns about nothing."""
    transparent = icon('circle', 40, (20, 160, 40), mode)
    rgba = transparent.convert('RGBA')
    flat = Image.alpha_composite(Image.new('RGBA', rgba.size, (BACKGROUND,) * 3 + (255,)), rgba).convert('RGB')
    if mode == 'LA':
        flat = flat.convert('L')
    transparent.save(tmp_path / 'transparent.png')
    flat.save(tmp_path / 'flat.png')
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        data = FileDataset([tmp_path / 'transparent.png', tmp_path / 'flat.png'], [-1, -1], [], image_size=32)
        first, second = (np.asarray(data.load(i)) for i in range(2))
    assert np.array_equal(first, second)
    assert first[0, 0].tolist() == ([BACKGROUND] * 3 if first.ndim == 3 else BACKGROUND)  # not black


def test_a_broken_image_is_named_when_the_normalisation_is_computed(tmp_path, env_file, capsys):
    """The template computes the normalisation from the images: a 0-byte or truncated file stops the run with
    its path, not with advice about image sizes; nothing is written."""
    folder = tmp_path / 'photos'
    folder.mkdir()
    for i in range(6):
        Image.new('RGB', (30 + i, 40), (10 * i, 50, 90)).save(folder / f'{i}.png')
    (folder / 'empty.jpg').write_bytes(b'')
    good = (folder / '0.png').read_bytes()
    for broken, content in (('empty.jpg', b''), ('cut.png', good[:len(good) // 2])):
        for f in ('empty.jpg', 'cut.png'):
            (folder / f).unlink(missing_ok=True)
        (folder / broken).write_bytes(content)
        with pytest.raises(SystemExit) as e:
            simclr.main(['--config_env', env_file, '--config_exp', os.path.join(ROOT, 'configs', 'image_folder.yml'),
                         f'db_kwargs.path={folder}'])
        err = capsys.readouterr().err
        assert e.value.code == 2 and f'cannot read image {folder / broken}' in err and 'differ in size' not in err
        assert not (tmp_path / 'results').exists()


def test_files_that_are_not_images_are_counted(tmp_path, capsys):
    folder = tmp_path / 'mixed'
    folder.mkdir()
    Image.new('RGB', (8, 8)).save(folder / 'a.png')
    (folder / 'readme.txt').write_text('x')
    (folder / 'data.csv').write_text('x')
    (folder / '.DS_Store').write_text('x')
    assert len(build_dataset('image_folder', str(tmp_path), '', {'path': 'mixed'})) == 1
    out = capsys.readouterr().out
    assert 'skipped 2 file(s) that are not images (.csv, .txt' in out


def test_gallery_shows_the_file_not_the_training_copy(tmp_path):
    import eval as evaluate
    Image.new('RGB', (100, 60), (1, 2, 3)).save(tmp_path / 'wide.png')
    Image.new('RGB', (400, 300), (1, 2, 3)).save(tmp_path / 'big.png')
    data = FileDataset([tmp_path / 'wide.png', tmp_path / 'big.png'], [-1, -1], [], image_size=16)
    assert data.get_image(0).size == (16, 16)
    assert evaluate.gallery_image(data, 0).size == (100, 60)  # the file's own pixels, not upscaled
    assert evaluate.gallery_image(data, 1).size == (evaluate.THUMBNAIL, evaluate.THUMBNAIL * 3 // 4)


@pytest.mark.parametrize('p, text', [(0.5, '0.50'), (0.934, '0.93'), (0.9987, '0.9987'), (0.99952, '0.99952'),
                                     (0.999952, '0.999952'), (1.0, '1.00')])
def test_confidences_near_one_keep_their_order_visible(p, text):
    from evaluation.html_report import confidence_text
    assert confidence_text(p) == text


def test_plots_have_whole_number_ticks(tmp_path, monkeypatch):
    from utils import logger, plots
    log = logger.RunLog(str(tmp_path))
    for epoch, loss in ((1, 2.0), (2, 1.5), (3, 1.2)):
        log.log({'epoch': epoch, 'loss': loss})
    figures = []
    plt = plots.pyplot()
    monkeypatch.setattr(plt, 'close', figures.append)
    log.plot(str(tmp_path / 'curve.png'), ['loss'])
    report = {'community_sizes': [60, 40], 'cluster_sizes': [60, 40], 'min_size': 30.0, 'max_size': 90.0}
    plots.save_num_clusters_plot(report, 2, str(tmp_path / 'k.png'))  # two bars: cluster ranks 1 and 2
    for ax in (figures[0].axes[0], *figures[1].axes):
        ticks = ax.get_xticks()
        assert len(ticks) and all(float(t).is_integer() for t in ticks), ticks
