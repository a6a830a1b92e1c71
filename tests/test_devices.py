"""Training runs on CUDA (`training.device`): every tensor the model code makes must be on the device
of its inputs, and every `.numpy()` must come off the device first.

A static check, so it needs no GPU and imports none of the modules it reads. It flags, in every .py
file of the scanned packages:

(a) a call to a torch tensor factory (torch.zeros, ones, full, empty, arange, tensor, rand, randn,
    randint, randperm, eye, linspace) without a `device=` keyword: it lands on the CPU whatever its
    inputs are. The *_like factories and `x.new_*` are fine, they inherit the device;
(b) a `.numpy()` whose receiver is not a `.cpu()` call: `x.cpu().numpy()` and
    `x.detach().cpu().numpy()` pass, `x.numpy()` and `x.detach().numpy()` do not.

A line that is CPU by design may say so with a trailing comment `# cpu: <reason>` (on the line
the failure names); keep those rare. The ones there are: a parameter or buffer made in a module's
__init__, which has no input to follow and moves with the module (`module.to(device)`). A tensor
meant to stay on the CPU whatever the model's device (a cache, a numpy-side index) says
`device="cpu"` instead.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("rrg/model", "rrg/training", "prompts", "retrieval")
FACTORIES = frozenset(
    {"zeros", "ones", "full", "empty", "arange", "tensor"}
    | {"rand", "randn", "randint", "randperm", "eye", "linspace"}
)
ESCAPE = re.compile(r"#\s*cpu:\s*\S")


def _escaped_lines(source: str) -> set[int]:
    """Line numbers carrying a `# cpu: <reason>` comment."""
    lines = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT and ESCAPE.match(token.string):
            lines.add(token.start[0])
    return lines


def _torch_names(tree: ast.Module) -> tuple[set[str], dict[str, str]]:
    """The names torch is bound to (`import torch`, `import torch as th`) and the factories imported
    by name (`from torch import zeros as z` -> {"z": "zeros"})."""
    modules, factories = {"torch"}, {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "torch":
                    modules.add(alias.asname or "torch")
        elif isinstance(node, ast.ImportFrom) and node.module == "torch":
            for alias in node.names:
                if alias.name in FACTORIES:
                    factories[alias.asname or alias.name] = alias.name
    return modules, factories


def _factory(call: ast.Call, modules: set[str], factories: dict[str, str]) -> str | None:
    """The factory's name if `call` is a torch tensor factory, else None."""
    func = call.func
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id in modules:
        return func.attr if func.attr in FACTORIES else None
    if isinstance(func, ast.Name) and func.id in factories:
        return factories[func.id]
    return None


def _is_cpu_call(node: ast.expr) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "cpu"


def device_flags(source: str, name: str = "<snippet>") -> list[str]:
    """`name:line: why` for each factory without `device=` and each `.numpy()` not straight after
    `.cpu()` in `source`, less the lines escaped with `# cpu: <reason>`."""
    tree = ast.parse(source, filename=name)
    escaped = _escaped_lines(source)
    modules, factories = _torch_names(tree)
    flags = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        factory = _factory(node, modules, factories)
        if factory is not None:
            has_device = any(keyword.arg in ("device", None) for keyword in node.keywords)  # None: **kwargs
            if not has_device and node.lineno not in escaped:
                flags.append((node.lineno, f"torch.{factory}(...) without device="))
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr == "numpy" and not node.args and not node.keywords:
            line = func.end_lineno  # the line where `.numpy` itself is written
            if not _is_cpu_call(func.value) and line not in escaped:
                flags.append((line, ".numpy() not straight after .cpu()"))
    return [f"{name}:{line}: {why}" for line, why in sorted(flags)]


def scanned_files() -> list[Path]:
    return sorted(path for folder in SCANNED for path in (ROOT / folder).rglob("*.py"))


def test_the_checker_catches_bad_snippets_and_passes_good_ones():
    bad = (
        "import torch\n"
        "import torch as th\n"
        "from torch import arange as ar\n"
        "def f(x):\n"
        "    a = torch.zeros(3)\n"
        "    b = th.eye(len(x), dtype=torch.bool)\n"
        "    c = ar(4)\n"
        "    d = torch.tensor(\n"
        "        [1, 2],\n"
        "    )\n"
        "    e = x.numpy()\n"
        "    g = x.detach().numpy()\n"
        "    h = (x\n"
        "         .cpu().detach()\n"
        "         .numpy())\n"
        "    i = torch.ones(2)  # cpu:\n"  # an escape must give a reason
        "    j = torch.full((2,), 1.0)  # a comment, not an escape\n"
    )
    flags = device_flags(bad, "bad.py")
    assert [flag.split(": ", 1)[0] for flag in flags] == [
        "bad.py:5",
        "bad.py:6",
        "bad.py:7",
        "bad.py:8",
        "bad.py:11",
        "bad.py:12",
        "bad.py:15",
        "bad.py:16",
        "bad.py:17",
    ]
    assert "torch.eye(...) without device=" in flags[1] and ".numpy() not straight after .cpu()" in flags[4]
    good = (
        "import numpy as np\n"
        "import torch\n"
        "def f(x, **kw):\n"
        "    a = torch.zeros(3, device=x.device)\n"
        "    b = torch.eye(len(x), dtype=torch.bool, device=x.device)\n"
        "    c = torch.zeros_like(x) + x.new_ones(3)\n"
        "    d = x.cpu().numpy() + x.detach().cpu().numpy()\n"
        "    e = torch.arange(len(x))  # cpu: indexes a numpy array\n"
        "    g = np.zeros(3) + np.arange(3)\n"
        "    h = torch.randn(3, **kw)\n"
        "    i = (x.detach()\n"
        "         .cpu()\n"
        "         .numpy())\n"
    )
    assert device_flags(good, "good.py") == []


def test_model_code_makes_tensors_on_its_inputs_device():
    files = scanned_files()
    assert any(path.parts[-2:] == ("retrieval", "lre.py") for path in files)  # the scan found the packages
    flags = []
    for path in files:
        flags += device_flags(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    assert not flags, "tensors made off their inputs' device, or .numpy() before .cpu():\n" + "\n".join(flags)
