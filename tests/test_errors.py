"""How the stages show faults that are the machine's or the input's, not a bug (dreamsolo.errors)."""

from __future__ import annotations

import errno
import os

import pytest


@pytest.mark.parametrize("code, fix", [(errno.ENOSPC, "free some space"), (errno.EROFS, "read-only"),
                                       (errno.EACCES, "make it writable")])
def test_a_full_or_read_only_disk_is_one_line_naming_the_file(capsys, code, fix):
    """Issue 26, point 3: a disk fault in a stage ends in one line, not a (chained) traceback.
    Mutation: without the OSError branch of one_line_errors the error propagates and this fails."""
    from dreamsolo.errors import one_line_errors

    with pytest.raises(SystemExit) as done:
        with one_line_errors("sample"):
            raise OSError(code, os.strerror(code), "data/samples/.cat_grass.tmp-1/0.png")
    assert done.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: sample: data/samples/.cat_grass.tmp-1/0.png: ")
    assert fix in err[0] and "no half-written output was kept" in err[0]


def test_other_os_errors_stay_tracebacks():
    from dreamsolo.errors import one_line_errors

    with pytest.raises(ConnectionResetError):  # a bug or a network fault: the traceback is the information
        with one_line_errors("sample"):
            raise ConnectionResetError(errno.ECONNRESET, "reset")
