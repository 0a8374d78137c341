"""docs/configuration.md is what scripts/config_reference.py makes of the config models."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import Field

from modules.eventbus.config import EngineConfig
from scripts import config_reference
from scripts.config_descriptions import DESCRIPTIONS
from scripts.config_reference import Reference, UndocumentedError, render

ROOT = Path(__file__).resolve().parents[2]


def test_docs_configuration_md_is_up_to_date() -> None:
    committed = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert committed == render(), (
        "docs/configuration.md is out of date: run `python -m scripts.config_reference`"
    )


def test_every_key_of_every_engine_type_is_in_the_reference() -> None:
    text = render()
    for key in ("`workerCount`", "`shutdownTimeout`", "`metrics.datadog.flushInterval`"):
        assert key in text
    for type_name, engine_class in config_reference.engine_types():
        assert f'### `type = "{type_name}"`' in text
        for name in engine_class.config_model.model_fields:
            assert f"| `{name}` |" in text or f"`.{name}` |" in text, (type_name, name)


def test_secrets_are_marked_and_durations_written_as_users_write_them() -> None:
    text = render()
    assert "| `externalBrokerPassword` | `external_broker_password` | string, secret |" in text
    assert '| `eventTTL` | `event_ttl` | duration | `"1h"` |' in text
    assert '| `reconnectMinDelay` | `reconnect_min_delay` | duration | `"50ms"` |' in text


class _NewEngineConfig(EngineConfig):
    undocumented_knob: int = Field(default=3, gt=0)
    documented_knob: bool = Field(default=True, description="a key with its own description")


def test_a_key_without_description_stops_the_generator() -> None:
    reference = Reference()
    rows = list(reference.rows(_NewEngineConfig, ["undocumented_knob", "documented_knob"]))
    assert reference.missing == ["_NewEngineConfig.undocumented_knob"]
    assert rows[1].endswith("| a key with its own description |")
    assert "| integer | `3` | > 0 |" in rows[0]


def test_a_description_of_a_vanished_key_stops_the_generator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stale = {**DESCRIPTIONS}
    stale["EngineConfig"] = {**stale["EngineConfig"], "worker_cont": "a key that is gone"}
    monkeypatch.setattr(config_reference, "DESCRIPTIONS", stale)
    with pytest.raises(
        UndocumentedError, match=r"unused description .*: EngineConfig\.worker_cont"
    ):
        render()


def test_check_mode_reports_an_out_of_date_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    stale_file = tmp_path / "configuration.md"
    stale_file.write_text("# old\n", encoding="utf-8")
    monkeypatch.setattr(config_reference, "OUTPUT", stale_file)
    monkeypatch.setattr(config_reference, "ROOT", tmp_path)
    assert config_reference.main(["--check"]) == 1
    assert "run python -m scripts.config_reference" in capsys.readouterr().err
    assert config_reference.main([]) == 0
    assert stale_file.read_text(encoding="utf-8") == render()
    assert config_reference.main(["--check"]) == 0
