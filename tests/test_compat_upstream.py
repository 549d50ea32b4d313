"""compat_upstream: a trainer whose loss module does not load skips the comparisons with it,
visibly and with the reason, unless SWAV_KERNELS_REQUIRE_UPSTREAM=1 (CI) makes it a failure."""
import pytest

import compat_upstream


@pytest.fixture
def missing(monkeypatch):
    def load():
        raise ImportError("notatrainer is not installed")

    monkeypatch.setitem(compat_upstream._LOADERS, "notatrainer", load)
    yield "notatrainer"
    compat_upstream._try_load.cache_clear()


def test_a_missing_trainer_skips_with_the_reason(missing, monkeypatch):
    monkeypatch.delenv(compat_upstream.REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match="notatrainer is not installed.*pip install --no-deps"):
        compat_upstream.upstream(missing)


def test_a_missing_trainer_fails_when_required(missing, monkeypatch):
    monkeypatch.setenv(compat_upstream.REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="notatrainer is not installed.*requires it"):
        compat_upstream.upstream(missing)
