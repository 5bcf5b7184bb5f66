"""``agebench compare``: several models on one benchmark, paired record by record, one report.

Pure (no click). A comparison is computed from *finished eval runs* alone (a folder holding
``summary.json`` and ``predictions.jsonl``), so it never needs to know how they were made, and
it imports no runner: ``agebench.runner.compare`` runs the models first where asked (reusing
any finished eval of the same model on the same data) and writes the report.

Rules, chosen once:

- Runs are comparable only on the same benchmark, benchmark version, protocol and split, the
  same data (``summary["benchmark"]["fingerprint"]``) and the same records with the same labels.
  The fingerprint also covers the faces mode; runs that differ *only* in how faces were
  obtained (``--faces none`` against ``detect``) are comparable when their image and label
  files (``files_sha256``), benchmark options and every record's labels and fold agree: they
  saw the same images, and the face step is part of what is compared.
- Records are paired by ``image`` + ``source``. A record *fails* for a model when its status is
  not "ok" or it carries no prediction. Headline numbers are over the *intersection*: label
  rows that every model scored. A failure in one model removes the record for all of them, and
  is listed; each model's own full-set numbers (from its summary) are shown beside.
- Per-pair tests are Wilcoxon signed-rank on the absolute errors, Holm-corrected over all
  pairs; groups and the ranking use the corrected p-values (``agebench.core.stats``).

``runs`` reads finished runs, ``checks`` decides whether they can be compared, ``pairing``
pairs their records, ``statistics`` computes the comparison (``compare_runs``).
"""
