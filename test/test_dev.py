"""dev.py's test command hands its arguments to pytest as given: a selection runs alone."""
import subprocess
import sys
from pathlib import Path

import dev

REPO = Path(__file__).resolve().parent.parent


def test_a_selection_is_passed_alone_and_options_keep_the_test_paths():
    assert dev._pytest_arguments(['test/test_dev.py::test_x', '-x']) == [
        'test/test_dev.py::test_x', '-x']
    assert dev._pytest_arguments(['--', '-k', 'name']) == ['-k', 'name']
    assert dev._selects_tests(['test/test_dev.py::test_x'])
    assert not dev._selects_tests(['-k', 'weights', '-x'])


def test_pytest_runs_exactly_the_selected_test(tmp_path):
    """What dev.py test runs for a selection, through pytest itself (collection only)."""
    selection = ('test/test_dev.py::'
                 'test_a_selection_is_passed_alone_and_options_keep_the_test_paths')
    out = subprocess.run([sys.executable, '-m', 'pytest', '--collect-only', '-q',
                          *dev._pytest_arguments([selection])], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    collected = [line for line in out.splitlines() if '::' in line]
    assert collected == [selection]
