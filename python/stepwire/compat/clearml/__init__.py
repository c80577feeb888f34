"""ClearML-style ``Task`` and ``Logger`` on stepwire runs.

Scripts written for ClearML's SDK run on stepwire by changing the import::

    from stepwire.compat.clearml import Task

    task = Task.init(project_name="mnist", task_name="baseline")     # address=/dir= go to stepwire.init
    params = task.connect({"lr": 0.1, "epochs": 3})                   # parameters "General/lr", "General/epochs"
    logger = task.get_logger()
    for it in range(100):
        logger.report_scalar("loss", "train", value=1.0 / (it + 1), iteration=it)
    logger.report_single_value("accuracy", 0.97)
    task.close()

    done = Task.get_task(project_name="mnist", task_name="baseline")  # read back (the newest of that name)
    done.get_reported_scalars()   # {"loss": {"train": {"x": [0, 1, ...], "y": [1.0, 0.5, ...]}}}

How ClearML's model maps onto stepwire's:

- A task is a run: ``task.id`` is the run id, ``project_name`` the project (``"default"`` if None),
  ``task_name`` the run name, ``tags`` its tags; the task type goes to the run meta ``task_type``.
- Scalars: ``(title, series)`` is the stepwire scalar ``"title/series"``, ``iteration`` its step (stepwire steps
  are ints >= 0, so a negative iteration raises ``ValueError``).
- Reading back (``get_reported_scalars``, ``get_last_scalar_metrics``, ...) splits a stepwire name at its **last**
  ``"/"``: title = what is before it, series = what follows (``"train/loss/mean"`` -> ``("train/loss", "mean")``,
  which is what ClearML's Ignite output handler makes of 3-part keys); a name without ``"/"`` (or with nothing on
  one side of it) reads as title = series = the name. Where that rule would not give back the pair reported
  through this module (a series containing ``"/"``, an empty title or series) the exact pair is kept in the run
  meta ``clearml_names`` and reading uses it; names logged by other means follow the rule. Two pairs that join to
  the same name (``("a/b", "c")`` and ``("a", "b/c")``) are one stepwire series.
- Single values: ClearML reports them as title ``"Summary"`` at iteration -2**31; here they are the scalar
  ``"Summary/<name>"`` at step 0. Everything under title ``"Summary"`` reads back as single values
  (``get_reported_single_values``: the latest report of each name), is part of ``get_last_scalar_metrics`` and
  is left out of ``get_reported_scalars`` (ClearML shows single values as a table, not as graphs).
- Histograms: ClearML's ``report_histogram`` takes bar heights that are already binned (a row per bar group, a
  column per bar, with legend ``labels`` and bar ``xlabels``): a plot, not data to bin. stepwire's histograms bin
  raw values, so bar heights cannot go there; scalar series per bar would lose the labels and show up among the
  scalars, which ClearML never does. So each call is stored losslessly as a JSON text record named
  ``"plots/<title>/<series>"`` at step = iteration (0 if None)::

      {"kind": "histogram", "title": ..., "series": ..., "iteration": ..., "values": [[...], ...],
       "labels": ..., "xlabels": ..., "xaxis": ..., "yaxis": ..., "mode": "group", "data_args": ...,
       "extra_layout": ...}

  ``values`` is a list of rows (1-D input is one row) with the numbers exactly as given (ints stay ints, NaN and
  infinities included). Read them with ``Task.get_reported_histograms()`` (a stepwire addition) or
  ``stepwire.Api().run(id).texts()``. Each call is one request to the collector, not the native fast path:
  fine for per-epoch plots, not for per-step ones.
- Text: ``report_text`` is the text ``"console"`` at the run's auto step (printed too unless
  ``print_console=False``; the level is not stored); ``get_reported_console_output`` reads it back.
- Parameters are the run config, stored flat as ClearML shows them: ``{"Section/name": "value as a string"}``
  (section ``"General"`` by default; None -> ``""``, lists/tuples/dicts -> JSON, enums -> their member name,
  anything else ``str()``). A task keeps a local copy, so ``get_parameters`` is consistent right away. Reading a
  run whose config was logged by plain stepwire flattens nested dicts with ``"/"`` and puts keys without a
  section under ``"General"``.
- Progress is the run meta ``progress`` (an int 0..100); status: ``get_status`` maps stepwire's
  running/finished/failed to ClearML's in_progress/completed/failed.
- Offline mode (``Task.set_offline(True)`` before ``Task.init``, or ``CLEARML_OFFLINE_MODE=1``): the task logs
  through the embedded default into a fresh session folder ``$STEPWIRE_OFFLINE_DIR/<uuid>`` (else
  ``~/.stepwire/offline/<uuid>``), a complete stepwire data directory (collector started on demand, DuckDB store);
  ``task.get_offline_mode_folder()`` returns it and ``Task.get_task(task_id, dir=folder)`` or
  ``stepwire.Api(dir=folder)`` read it. The folder name is a uuid because the run id exists only once the run does.

Accepted and without effect: ``Task.init``'s ``reuse_last_task_id`` (every ``init`` makes a new task),
``output_uri``, ``auto_connect_arg_parser``, ``auto_connect_frameworks``, ``auto_resource_monitoring``,
``auto_connect_streams`` (nothing is captured automatically) and ``deferred_init``; ``allow_archived`` of
``get_task``/``get_tasks`` (nothing is archived).

Not implemented: ``continue_last_task`` (``ValueError``), ``task_filter`` (``ValueError``), the ``"__$"`` tag
operators (``ValueError``), reporting into a task opened with ``Task.get_task`` (read-only: ``RuntimeError``),
uploading offline sessions (``Task.import_offline_session``), ``connect`` of argparse parsers and models
(``TypeError``; connect ``vars(args)`` instead), tracking a connected dict after ``connect`` (ClearML returns a
proxy that records later writes; here the dict itself is returned and its later changes need another
``connect``), ``cast=`` when reading parameters, artifacts, models, debug samples and other plot kinds.
``mark_completed``/``mark_failed`` end the run but, unlike ClearML, never terminate the process.
"""


from stepwire.compat.clearml.logger import Logger
from stepwire.compat.clearml.reports import split_name
from stepwire.compat.clearml.task import Task, TaskTypes

__all__ = ["Logger", "Task", "TaskTypes", "split_name"]
