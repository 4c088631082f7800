"""The documentation follows the code: every settings field is on the configuration page, as rendered."""

from __future__ import annotations

from app.settings import Settings
from app.settings_doc import DESCRIPTIONS, PAGE, env_name, page_table, render_table

REWRITE = "run `python -m app.settings_doc` to write docs/configuration.md's table again"


def test_every_setting_has_a_description() -> None:
    fields = set(Settings.model_fields)
    assert not fields - set(DESCRIPTIONS), (
        f"describe these settings in app/settings_doc.py: {fields - set(DESCRIPTIONS)}"
    )
    assert not set(DESCRIPTIONS) - fields, f"no such settings any more: {set(DESCRIPTIONS) - fields}"


def test_every_setting_is_on_the_configuration_page() -> None:
    text = PAGE.read_text()
    missing = [env_name(field) for field in Settings.model_fields if f"`{env_name(field)}`" not in text]
    assert not missing, f"{missing} missing from {PAGE}: {REWRITE}"


def test_the_configuration_table_is_the_rendered_one() -> None:
    assert page_table(PAGE.read_text()) == render_table(), REWRITE
