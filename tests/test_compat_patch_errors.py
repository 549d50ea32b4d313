"""``patch()`` errors say what actually failed: the trainer is not installed, or it is installed
and its own import fails (the upstream's error quoted, and for a known case such as solo-learn
1.0.2's pins what to install instead); then where patch() works and the drop-in that needs no
trainer. Both cases are simulated (an import hook hides the package; a stand-in package with
its dist-info fails at import), so the test runs whether or not the trainers are installed."""
import sys
import textwrap

import pytest

from swav_kernels.compat import dinov2, lightly, solo_learn, vissl

# adapter, top-level package, pip distribution (name, metadata directory), the module patch() imports
ADAPTERS = {
    "lightly": (lightly, "lightly", "lightly", "lightly", "lightly.loss.swav_loss"),
    "solo-learn": (solo_learn, "solo", "solo-learn", "solo_learn", "solo.losses.swav"),
    "VISSL": (vissl, "vissl", "vissl", "vissl", "vissl.losses.swav_loss"),
    "DINOv2": (dinov2, "dinov2", "dinov2", "dinov2", "dinov2.loss.dino_clstoken_loss"),
}
DROP_INS = {
    "lightly": "from swav_kernels.compat.lightly import SwaVLoss, sinkhorn",
    "solo-learn": "from swav_kernels.compat.solo_learn import swav_loss_func, SinkhornKnopp",
    "VISSL": "from swav_kernels.compat.vissl import SwAVLoss",
    "DINOv2": "from swav_kernels.compat.dinov2 import sinkhorn_knopp_teacher, ibot_sinkhorn_knopp_teacher",
}


def forget(monkeypatch, package):
    """Drop ``package`` and its submodules from sys.modules for this test (restored after)."""
    for name in [name for name in sys.modules if name == package or name.startswith(package + ".")]:
        monkeypatch.delitem(sys.modules, name)


class Hide:
    """An import hook under which ``package`` is not installed, whatever is."""

    def __init__(self, package):
        self.package = package

    def find_spec(self, name, path=None, target=None):
        if name == self.package or name.startswith(self.package + "."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


def patch_error(adapter):
    with pytest.raises(ImportError) as info:
        adapter.patch()
    assert not adapter._PATCH.applied
    return " ".join(str(info.value).split())


@pytest.mark.parametrize("trainer", ADAPTERS)
def test_a_missing_trainer_is_named_with_where_patch_works_and_the_drop_in(trainer, monkeypatch):
    adapter, package, *_ = ADAPTERS[trainer]
    forget(monkeypatch, package)
    monkeypatch.setattr(sys, "meta_path", [Hide(package), *sys.meta_path])
    message = patch_error(adapter)
    assert message.startswith(f"cannot patch {trainer}: it is not installed (no module {package!r}). patch() works with ")
    assert f"Without {trainer}, use the drop-in: {DROP_INS[trainer]}" in message
    assert "its own import fails" not in message


def fake_install(tmp_path, monkeypatch, package, dist_dir, version, failure):
    """A package ``package`` on sys.path, with pip's metadata of ``version``, whose
    ``__init__`` runs ``failure`` (an upstream import that fails)."""
    root = tmp_path / "site"
    (root / package).mkdir(parents=True)
    (root / package / "__init__.py").write_text(textwrap.dedent(failure))
    info = root / f"{dist_dir}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist_dir}\nVersion: {version}\n")
    forget(monkeypatch, package)
    monkeypatch.syspath_prepend(str(root))
    return root / package


def test_solo_learn_1_0_2_says_its_pins_and_what_works(tmp_path, monkeypatch):
    """solo-learn 1.0.2 (PyPI's only release) installed without its pins: ``import solo`` fails on
    pytorch_lightning, as it does beside any torch this package supports."""
    where = fake_install(tmp_path, monkeypatch, "solo", "solo_learn", "1.0.2", """\
        raise ModuleNotFoundError("No module named 'pytorch_lightning'", name="pytorch_lightning")
        """)
    message = patch_error(solo_learn)
    assert message.startswith(f"cannot patch solo-learn: solo-learn 1.0.2 is installed ({where}) but its own import "
                              "fails: import solo.losses.swav raised ModuleNotFoundError: No module named "
                              "'pytorch_lightning'. ")
    assert "solo-learn 1.0.2, the only release on PyPI, pins torch 1.9.1 and pytorch-lightning 1.4.7 and needs pl_bolts" \
        in message
    assert "patch() works with solo-learn's repository (main; tested at commit 9187ea3" in message
    assert "'lightning==2.1.2' 'torchmetrics<0.12'" in message and "'setuptools<81'" in message
    assert f"Or use the drop-in, which does not import solo-learn: {DROP_INS['solo-learn']}" in message


def test_an_installed_trainer_whose_import_fails_otherwise_quotes_that_error(tmp_path, monkeypatch):
    """Any exception of the upstream's import (here AttributeError) is reported as such, with
    the version found, and no advice for another known case."""
    fake_install(tmp_path, monkeypatch, "solo", "solo_learn", "1.0.9", """\
        import types
        types.NoSuchThing  # an import that breaks on this Python or torch
        """)
    message = patch_error(solo_learn)
    assert "solo-learn 1.0.9 is installed" in message
    assert "raised AttributeError: module 'types' has no attribute 'NoSuchThing'" in message
    assert "pins torch 1.9.1" not in message and DROP_INS["solo-learn"] in message


def test_vissl_beside_a_new_torchvision_names_the_missing_kinetics400(tmp_path, monkeypatch):
    fake_install(tmp_path, monkeypatch, "vissl", "vissl", "0.1.6", """\
        raise ImportError("cannot import name 'Kinetics400' from 'torchvision.datasets.kinetics'")
        """)
    message = patch_error(vissl)
    assert "VISSL 0.1.6 is installed" in message and "raised ImportError: cannot import name 'Kinetics400'" in message
    assert "bundled classy_vision imports torchvision.datasets.kinetics.Kinetics400" in message
    assert DROP_INS["VISSL"] in message


@pytest.mark.parametrize("trainer", ["lightly", "DINOv2"])
def test_lightly_and_dinov2_failing_imports_name_the_no_deps_install(trainer, tmp_path, monkeypatch):
    adapter, package, _, dist_dir, module = ADAPTERS[trainer]
    fake_install(tmp_path, monkeypatch, package, dist_dir, "9.9", """\
        raise ImportError("a dependency is missing")
        """)
    message = patch_error(adapter)
    assert f"{trainer} 9.9 is installed" in message and f"import {module} raised ImportError: a dependency" in message
    assert "pip install --no-deps" in message and DROP_INS[trainer] in message
