"""Put on PYTHONPATH by tests/integration/test_demo.py, so that every Python process of the demo under test
(the service, its Celery worker) runs the fake evaluation core of this folder instead of torch.

Python imports ``sitecustomize`` at start-up, before the project is on sys.path: only the fake modules are
registered here; they import project code inside their functions.
"""

import sys

import fake_gate
import fake_guard

sys.modules["evaluation.gate"] = fake_gate
sys.modules["evaluation.guard"] = fake_guard
