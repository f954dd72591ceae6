"""The scenario's workload programs: small, CPU-only, real, and the same code in the image and locally.

Three programs make up the seed's AI Job, one per container, all sharing the pod's checkpoint volume
(``$CHECKPOINT_DIR``, exported by the admission webhook on a real cluster and by the local pod runner
on the development cluster):

* ``python -m apolloctl.workloads.dataprep``: a fixed amount of preprocessing work; writes the
  dataset to ``$CHECKPOINT_DIR/data/`` and exits 0 (a completed container, which a migration must
  not re-run);
* ``python -m apolloctl.workloads.trainer``: logistic regression by minibatch gradient descent in
  numpy; checkpoints to ``$CHECKPOINT_DIR/trainer/`` every few seconds and on SIGTERM (then exits
  non-zero, so a Job never counts an interrupted run as a success), resumes from the newest valid
  checkpoint and reports the step it resumed from;
* ``python -m apolloctl.workloads.monitor``: keeps running, printing the trainer's progress.

Layout of the checkpoint directory (the contract between the programs, the pod runner and tools):

==================================  ===============================================================
``data/dataset.npz``                features and labels written by data-prep
``data/manifest.json``              written last: the dataset is complete (rows, features, sha256)
``trainer/ckpt-<step>.npz``         checkpoints, newest last; written to a temporary file and renamed
``trainer/progress.json``           step, loss, CPU seconds, refreshed about twice a second
``resumed-from.json``               written once at start by a program that resumes: the step it
                                    resumed from (-1 = from scratch), which pod and process wrote it
``checkpoint-step.json``            rewritten after every checkpoint: the step it holds, which pod and
                                    process wrote it
==================================  ===============================================================
"""

from __future__ import annotations

from apollo_api.podmigration import CHECKPOINT_ENV as CHECKPOINT_ENV

DATA_DIR = "data"
DATASET_FILE = "dataset.npz"
MANIFEST_FILE = "manifest.json"
TRAINER_DIR = "trainer"
PROGRESS_FILE = "progress.json"
RESUMED_FROM_FILE = "resumed-from.json"
CHECKPOINT_STEP_FILE = "checkpoint-step.json"
# Exit code of a program stopped by SIGTERM after it saved its state: 128 + SIGTERM, what a shell
# reports for a process the signal killed, so "interrupted" reads the same either way.
EXIT_TERMINATED = 143
# A usage or environment error (missing CHECKPOINT_DIR, bad argument): distinct from a crash (1).
EXIT_USAGE = 2
