"""The step guard, one subsystem: StepGuard (safety.py, a TrainerCallback: it checks each step, rolls back a bad
one, stops a run that cannot go on), the faults it finds (faults.py) and the snapshots it rolls back to
(snapshots.py)."""
