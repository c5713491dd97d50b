"""DevBus, its hub configs, the sandbox and gilmsg-demo write bus configurations one way."""

from __future__ import annotations

import ast
from pathlib import Path

from gilmsg import config as gconfig
from gilmsg.testing import bus
from gilmsg.testing.sandbox import config as sandbox_config

PACKAGE = Path(__file__).resolve().parents[2] / "gilmsg"


def test_the_written_file_reads_back_as_the_config_and_leaves_no_temporary(tmp_path):
    cfg = {"endpoints": {"a": ["tcp://127.0.0.1:1"]}, "name": "a", "gilmsg.recipients": {}}
    path = bus.write_config_file(tmp_path / "sub" / "bus.py", cfg, comment="two\nlines")
    assert path.read_text().startswith("# two\n# lines\nconfig = ")
    loaded = gconfig.load(filename=str(path))
    assert {k: loaded[k] for k in cfg} == cfg
    bus.write_config_file(path, {**cfg, "name": "b"})  # replaced, not appended to
    assert gconfig.load(filename=str(path))["name"] == "b"
    assert sorted(p.name for p in path.parent.iterdir()) == ["bus.py"]


def test_the_sandbox_writes_through_the_same_writer(tmp_path):
    path = sandbox_config.write_config(tmp_path, {"endpoints": {"x": ["tcp://127.0.0.1:2"]}})
    assert path == tmp_path / bus.CONFIG_NAME
    assert path.read_text() == bus.render_config({"endpoints": {"x": ["tcp://127.0.0.1:2"]}})


def test_no_other_module_renders_a_config_file():
    writers = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Constant) and node.value == "config = ":
                writers.append(str(path.relative_to(PACKAGE)))
    assert writers == ["testing/bus.py"]
