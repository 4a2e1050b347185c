import subprocess
import sys

import nsnet
from nsnet import engine, errors, model


def test_public_api_is_pinned():
    assert nsnet.__all__ == [
        "Conflict",
        "Endpoint",
        "Engine",
        "Exhausted",
        "InvalidInput",
        "KernelError",
        "Network",
        "NotFound",
        "NsnetError",
        "Sandbox",
        "TeardownError",
    ]


def test_exports_are_the_objects_of_their_modules():
    homes = {"Engine": engine, "Endpoint": model, "Network": model, "Sandbox": model}
    for name in nsnet.__all__:
        assert getattr(nsnet, name) is getattr(homes.get(name, errors), name)


def test_dir_lists_the_public_api():
    assert dir(nsnet) == nsnet.__all__


def test_private_names_are_not_exported():
    assert not hasattr(nsnet, "Store")


def test_import_does_not_load_the_engine():
    probe = "import sys, nsnet; print('nsnet.engine' in sys.modules, 'nsnet.errors' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout == "False False\n"


def test_errors_share_one_base():
    children = [nsnet.Conflict, nsnet.Exhausted, nsnet.InvalidInput, nsnet.KernelError, nsnet.NotFound,
                nsnet.TeardownError]
    assert all(issubclass(error, nsnet.NsnetError) for error in children)
    assert issubclass(nsnet.Exhausted, nsnet.Conflict)
