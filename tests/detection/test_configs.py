"""Every shipped detection config parses into a run of a registered detector."""
from pathlib import Path

import pytest

from localmamba.detection import list_detectors
from localmamba.detection.train import parse_args

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs" / "detection").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_parses(path, tmp_path):
    cfg = parse_args(["--config", str(path), "--data-dir", str(tmp_path)])
    assert cfg.model in list_detectors()
    assert all(s <= cfg.epochs for s in cfg.lr_steps)
