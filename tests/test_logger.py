"""The run log (utils/logger.py)."""
import json

from utils.logger import RunLog


def test_a_half_written_last_line_is_dropped_before_a_resumed_run_appends(tmp_path):
    path = tmp_path / 'log.jsonl'
    path.write_text(json.dumps({'epoch': 1, 'loss': 2.0}) + '\n' + '{"epoch": 2, "lo')  # killed mid-write
    log = RunLog(str(tmp_path))
    log.log({'epoch': 2, 'loss': 1.5}, echo=False)
    assert log.records() == [{'epoch': 1, 'loss': 2.0}, {'epoch': 2, 'loss': 1.5}]
    RunLog(str(tmp_path))  # a complete log is left as it is
    assert path.read_text().count('\n') == 2


def test_a_log_that_is_all_partial_becomes_empty(tmp_path):
    (tmp_path / 'log.jsonl').write_text('{"epoch": 1')
    assert RunLog(str(tmp_path)).records() == []
