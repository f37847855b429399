"""The demo fetches the official checkpoint when it is missing and downloading is possible, and
keeps the random-weights banner offline: both paths without network (file:// URLs, a
downloader that fails as an offline one does)."""
import hashlib
import urllib.error
from dataclasses import replace

import pytest
import torch

from midas_ros.models import registry
from midas_ros.tools import demo

MODEL = 'midas_v21_small_256'


class Console:
    def __init__(self):
        self.lines = []

    def line(self, source, text):
        self.lines.append(f'[{source}] {text}')

    def text(self):
        return '\n'.join(self.lines)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty torch hub cache and no other weights directory."""
    monkeypatch.delenv('MIDAS_WEIGHTS_DIR', raising=False)
    previous = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / 'hub'))
    yield tmp_path / 'hub' / 'checkpoints'
    torch.hub.set_dir(previous)


def published(tmp_path, monkeypatch, payload=b'official checkpoint bytes' * 1000,
              sha256=None):
    """The model's official file served from a file:// URL (with ``sha256`` as published)."""
    served = tmp_path / 'release' / 'midas_v21_small_256.pt'
    served.parent.mkdir()
    served.write_bytes(payload)
    cfg = replace(registry.get_config(MODEL), url=served.as_uri(), sha256=sha256)
    monkeypatch.setattr(registry, 'get_config', lambda name: cfg)
    return cfg, payload


def test_missing_weights_are_downloaded_into_the_hub_cache(tmp_path, monkeypatch, hub_cache):
    payload = b'official checkpoint bytes' * 1000
    cfg, _ = published(tmp_path, monkeypatch, payload, hashlib.sha256(payload).hexdigest())
    console = Console()
    assert demo.fetch_official_weights(MODEL, console)
    target = hub_cache / cfg.file
    assert target.read_bytes() == payload
    assert [p.name for p in hub_cache.iterdir()] == [cfg.file]     # no partial file left
    assert 'downloading' in console.text() and 'SHA-256 checked' in console.text()
    # Next time it is found, not downloaded.
    console = Console()
    assert demo.fetch_official_weights(MODEL, console)
    assert 'weights found' in console.text() and 'downloading' not in console.text()


def test_a_download_with_the_wrong_hash_is_not_cached(tmp_path, monkeypatch, hub_cache):
    published(tmp_path, monkeypatch, sha256='0' * 64)
    console = Console()
    assert not demo.fetch_official_weights(MODEL, console)
    assert 'WeightsChecksumError' in console.text()
    assert not hub_cache.exists() or not list(hub_cache.iterdir())


def test_offline_keeps_the_random_weights(tmp_path, monkeypatch, hub_cache):
    def offline(url, *args, **kwargs):
        raise urllib.error.URLError('[Errno -2] Name or service not known')
    monkeypatch.setattr(torch.hub, 'download_url_to_file', offline)
    console = Console()
    assert not demo.fetch_official_weights(MODEL, console)
    assert 'download not possible' in console.text()
    assert 'Name or service not known' in console.text()
    assert not hub_cache.exists() or not list(hub_cache.iterdir())


def test_no_download_means_no_download(tmp_path, monkeypatch, hub_cache):
    def refuse(*args, **kwargs):
        raise AssertionError('downloaded although asked not to')
    monkeypatch.setattr(torch.hub, 'download_url_to_file', refuse)
    console = Console()
    assert not demo.fetch_official_weights(MODEL, console, download=False)
    assert console.lines == []


def test_the_demo_banner_says_random_weights_offline(tmp_path, monkeypatch, hub_cache):
    """main: offline, the loud banner and RANDOM weights in the parameters it writes."""
    monkeypatch.setattr(demo, 'fetch_official_weights', lambda *a, **k: False)
    seen = {}

    def run_and_report(run_args, console):
        seen['params'] = (tmp_path / 'out' / 'demo_params.yaml').read_text()
        return 1
    monkeypatch.setattr(demo.pipeline, 'run_and_report', run_and_report)
    console = Console()
    monkeypatch.setattr(demo.pipeline, 'Console', lambda: console)
    assert demo.main(['--output', str(tmp_path / 'out'), '--frames', '1']) == 1
    assert 'model.pretrained: false' in seen['params']
    assert 'RUNNING WITH RANDOM WEIGHTS' in console.text()
