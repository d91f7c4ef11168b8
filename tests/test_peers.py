"""Each real peer server starts on loopback and answers Tversion with its dialect.

A missing server program skips, unless PY9PFUSE_REQUIRE_PEERS=1 (then it fails).
"""
import pytest

try:
    from . import peers
except ImportError:  # tests/ is not a package: pytest puts tests/ on sys.path
    import peers


@pytest.mark.parametrize("name", peers.PEER_NAMES)
def test_peer_answers_its_dialect(name, tmp_path):
    with peers.start_or_skip(name, workdir=str(tmp_path)) as peer:
        with peer.connect() as sock:
            msize, version = peers.handshake(sock, peer.dialect, msize=1 << 20)
        assert version == peer.dialect, peer.log()[-2000:]
        assert 0 < msize <= peer.msize
        assert peer.proc.poll() is None, "server exited after the handshake"
    assert peer.proc.poll() is not None, "server still running after stop"
