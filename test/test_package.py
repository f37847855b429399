"""The package as colcon and users see it: manifest, executables, documented parameters."""
import ast
import os
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

import pytest
import yaml

from midas_ros import executables
from midas_ros.__main__ import main as dispatch
from midas_ros.executables import EXECUTABLES
from midas_ros.ros.depth_node_params import DEPTH_NODE_PARAMS
from midas_ros.ros.parameters import defaults

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _setup_console_scripts():
    tree = ast.parse(open(os.path.join(REPO, 'setup.py')).read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and key.value == 'console_scripts':
                    return [ast.literal_eval(item) for item in value.elts]
    raise AssertionError('setup.py declares no console_scripts')


def test_setup_and_dispatcher_offer_the_same_executables():
    scripts = {}
    for line in _setup_console_scripts():
        name, target = (part.strip() for part in line.split('='))
        scripts[name] = target
    assert scripts == {name: f'midas_ros.executables:{name}' for name, _ in EXECUTABLES}
    for name in scripts:
        assert getattr(executables, name).__name__ == name


@pytest.mark.parametrize('name,target', EXECUTABLES)
def test_every_executable_resolves_to_a_main(name, target):
    import importlib
    module, function = target.split(':')
    assert callable(getattr(importlib.import_module(module), function))


def test_a_stop_while_an_executable_is_importing_ends_quietly_with_status_0(tmp_path):
    # launch stopping everything while a node still imports torch (seconds on a busy CPU):
    # the signal lands inside an import. Here the module signals itself half-way through.
    (tmp_path / 'slow_to_import.py').write_text(
        'import os, signal, time\n'
        'os.kill(os.getpid(), signal.SIGINT)\n'
        'time.sleep(30)\n'
        'def main():\n    return 0\n')
    code = ('from midas_ros.executables import _import_main\n'
            '_import_main("slow_to_import:main")\n'
            'print("the import went on")\n')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), REPO]))
    done = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                          timeout=20)
    assert done.returncode == 0 and 'Traceback' not in done.stderr, done.stderr
    assert 'the import went on' not in done.stdout


def test_after_the_import_the_signal_handlers_are_the_previous_ones_again(tmp_path):
    # Whatever they were (a shell may start a process with SIGINT ignored).
    (tmp_path / 'quick_to_import.py').write_text('def main():\n    return 0\n')
    code = ('import signal\n'
            'from midas_ros.executables import _import_main\n'
            'before = [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)]\n'
            '_import_main("quick_to_import:main")\n'
            'assert [signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)] == before\n')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), REPO]))
    done = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True,
                          timeout=20)
    assert done.returncode == 0, done.stderr


def test_dispatcher_rejects_unknown_executables(capsys):
    assert dispatch(['no_such_node']) == 2
    assert 'unknown executable' in capsys.readouterr().err


def test_package_manifest_is_format_3_ament_python_with_runtime_dependencies():
    root = ElementTree.parse(os.path.join(REPO, 'package.xml')).getroot()
    assert root.get('format') == '3'
    assert root.findtext('name') == 'midas_ros'
    assert root.find('export/build_type').text == 'ament_python'
    depends = {e.text for e in root.findall('exec_depend')}
    for key in ('rclpy', 'sensor_msgs', 'std_msgs', 'geometry_msgs', 'vision_msgs',
                'visualization_msgs', 'diagnostic_msgs', 'python3-numpy', 'python3-opencv',
                'python3-torch'):
        assert key in depends, key
    assert os.path.isfile(os.path.join(REPO, 'resource', 'midas_ros'))


def _flatten(tree, prefix=''):
    flat = {}
    for key, value in tree.items():
        name = f'{prefix}{key}'
        if isinstance(value, dict):
            flat.update(_flatten(value, name + '.'))
        else:
            flat[name] = value
    return flat


def test_depth_node_yaml_documents_exactly_the_node_defaults():
    with open(os.path.join(REPO, 'config', 'depth_node.yaml')) as stream:
        documented = _flatten(yaml.safe_load(stream)['/**']['ros__parameters'])
    assert documented == defaults(DEPTH_NODE_PARAMS)


def test_every_default_passes_its_own_check():
    for param in DEPTH_NODE_PARAMS:
        assert param.check(param.default) is None, param.name


def _pins(name):
    with open(os.path.join(REPO, name)) as stream:
        return dict(line.split('==') for line in (raw.split('#')[0].strip() for raw in stream)
                    if line)


def test_robot_requirements_differ_only_in_the_robot_libraries():
    """requirements-robot.txt (dev.py's second test environment) is requirements.txt with the
    libraries a robot gets: the oldest numpy and OpenCV the README supports, the current timm."""
    pinned, robot = _pins('requirements.txt'), _pins('requirements-robot.txt')
    assert pinned.keys() == robot.keys()
    differing = {name for name in pinned if pinned[name] != robot[name]}
    assert differing == {'timm', 'numpy', 'opencv-python-headless'}
    assert pinned['timm'] == '0.6.13' and robot['timm'].startswith('1.0.')
    assert robot['numpy'].startswith('1.26.')
    assert robot['opencv-python-headless'].startswith('4.6.')
