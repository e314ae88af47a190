"""Generated README blocks are replaced in place, and a missing block is an error."""

import pytest

from tools.markdown_sections import update_section


def test_block_content_is_replaced_and_the_rest_kept(tmp_path):
    page = tmp_path / "README.md"
    page.write_text("intro\n<!-- t:start -->\nold\n<!-- t:end -->\noutro\n")
    update_section(page, "t", "| new |\n")
    assert page.read_text() == "intro\n<!-- t:start -->\n| new |\n<!-- t:end -->\noutro\n"


def test_missing_block_is_reported(tmp_path):
    page = tmp_path / "README.md"
    page.write_text("no markers\n")
    with pytest.raises(ValueError, match="no <!-- t:start -->"):
        update_section(page, "t", "x")
