"""Start-up stays light: the package, its CLI help and the pool load no torch or scipy."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("torch", "scipy", "transformers", "trl")

PROBE = """
import sys
{code}
print("LOADED:" + ",".join(m for m in {heavy!r} if m in sys.modules))
"""


@pytest.mark.parametrize("code", [
    "import rollwise",
    "from rollwise import PromptPool",
    "import rollwise.cli as c\ntry:\n    c.main(['--help'])\nexcept SystemExit:\n    pass",
    "import rollwise.cli as c\ntry:\n    c.main(['bench', '--help'])\nexcept SystemExit:\n    pass",
])
def test_light_imports(code):
    out = subprocess.run([sys.executable, "-c", PROBE.format(code=code, heavy=HEAVY)],
                         capture_output=True, text=True, check=True).stdout
    loaded = out.rsplit("LOADED:", 1)[1].strip()
    assert loaded == "", f"{code!r} loaded {loaded}"


def test_lazy_names_resolve():
    import rollwise

    assert set(rollwise.__all__) <= set(dir(rollwise))
    assert rollwise.make_selector is rollwise.selectors.make_selector
    with pytest.raises(AttributeError, match="no_such_name"):
        rollwise.no_such_name  # noqa: B018
