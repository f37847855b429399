"""Every module of the package imports: run in both test environments (dev.py), this catches a
library API used at import time that the other supported numpy / OpenCV / timm lacks."""
import importlib
import pkgutil

import pytest

import midas_ros

# timm 0.6.13 warns at import about torch.jit.script; models.factory (the usual way in) filters it.
pytestmark = pytest.mark.filterwarnings('ignore:`torch.jit.script` is deprecated')
MODULES = sorted(info.name for info in pkgutil.walk_packages(midas_ros.__path__, 'midas_ros.'))


def test_the_package_has_modules():
    assert 'midas_ros.video_sources' in MODULES and 'midas_ros.models.backbones.swin' in MODULES


@pytest.mark.parametrize('name', MODULES)
def test_module_imports(name):
    importlib.import_module(name)
