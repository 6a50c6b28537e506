"""The published ALARM corpora (``Blinorot/ALARM-Corpora``) turned into this project's training manifests.

The corpora hold text only (prompt, description, rephrased target) and name each clip by
``(dataset_name, unique_id_1, unique_id_2)``, the keys the official collection scripts gave the clips of
their local copies. This package finds (or rebuilds) those clips in the user's own downloads:

- ``reader``: corpus rows from local JSONL or parquet files (parquet through ``pyarrow``, an optional extra);
- ``sources``: the resolver base classes and the ``--audio-map`` table;
- ``layouts``: one small class per source distribution whose clips are files;
- ``built``: the clips the official scripts assemble (VoxCeleb pairs, dialogue and meeting windows, segments
  cut from long recordings), rebuilt the same way and written once as FLAC;
- ``registry``: every dataset name of the corpora -> its resolver;
- ``importer``: the ``alarm data import-corpora`` pipeline (split, filters, manifests, report).

docs/data.md describes the layouts, the command and the report.
"""
