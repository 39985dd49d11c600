"""Stand-in for the get-pip.py that ansible-test downloads to bootstrap pip in its sanity virtualenvs.

ansible-test fetches get-pip.py from its own CI file host, which this network cannot reach. It runs the
script as `python get-pip.py [pip options] pip==X.Y ...`; this stand-in does the same job with the
interpreter's own ensurepip and the package index pip is configured for. bin/test installs it into
ansible-test's cache (~/.ansible/test/cache/get_pip_<version>.py).
"""

import subprocess
import sys

IGNORED = {"--no-setuptools", "--no-wheel"}

subprocess.check_call([sys.executable, "-m", "ensurepip", "--upgrade", "--default-pip"])
subprocess.check_call([sys.executable, "-m", "pip", "install", *[a for a in sys.argv[1:] if a not in IGNORED]])
