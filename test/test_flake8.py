"""Style: flake8 at 99 columns over the package, tests, launch files and tools (ament's limit)."""
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.linter
def test_flake8():
    from flake8.api import legacy as flake8
    # official_depth_anything_v2: upstream code vendored verbatim as a test oracle.
    style = flake8.get_style_guide(max_line_length=99, exclude=[
        '.venv', 'build', 'install', 'log', 'official_depth_anything_v2'])
    paths = [os.path.join(REPO, p) for p in ('midas_ros', 'test', 'launch', 'interfaces',
                                             'dev.py', 'setup.py')]
    report = style.check_files(paths)
    assert report.total_errors == 0, 'flake8 found style errors (listed above)'
