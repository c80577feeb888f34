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
- Debug samples, plots and tables (``media_reports.py``) are stepwire media records (``Run.log_image``,
  ``log_media``, ``log_plot``, ``log_table``; read back with ``stepwire.Api().run(id).media()``, ``.plots()``,
  ``.tables()``) named as scalars are, ``"title/series"`` (exact pairs kept in ``clearml_names`` likewise), at
  step = iteration (0 if None) plus the task's offset:

  ============================== ==============================================================================
  ``report_image``               an image: ``image``/``matrix`` (numpy, PIL; stepwire's conversion rules),
                                 ``local_path`` (stored as given)
  ``report_media``               audio, video, image or HTML as given: ``local_path`` or ``stream`` (with
                                 ``file_extension``; ``html``/``htm`` make it HTML)
  ``report_plotly``              the figure as Plotly JSON, its layout title set to ``series`` (as ClearML)
  ``report_matplotlib_figure``   a PNG image (``report_image``/``report_interactive`` alike: no conversion to
                                 Plotly); ``figure`` may be ``matplotlib.pyplot`` (its current figure)
  ``report_table``               a table: a DataFrame (a non-default index becomes the first column), rows (the
                                 first is the header) or a ``csv`` file
  ``report_confusion_matrix``    Plotly JSON, a ``heatmap`` trace (``report_matrix`` too)
  ``report_scatter2d``           Plotly JSON, a ``scatter`` trace in ``mode``
  ``report_scatter3d``           Plotly JSON, a ``scatter3d`` trace (one per array of a list)
  ``report_surface``             Plotly JSON, a ``surface`` trace
  ``report_line_plot``           Plotly JSON named ``title`` (ClearML's empty series), a ``scatter`` per line
  ``report_vector``              as ``report_histogram`` (below)
  ============================== ==============================================================================

  Plots are laid out as ClearML's reporter does (title with ``comment`` under it, axis titles,
  ``extra_layout`` merged in) with properties Plotly knows only. A ``url`` (of an image, media or a table) is
  never fetched: it is the JSON text ``"links/<title>/<series>"`` ``{"kind", "title", "series", "iteration",
  "url"}``. Exactly one source must be given (else ``ValueError``, ClearML's ``UsageError``).
  ``delete_after_upload`` deletes the file once the call has captured it. ClearML keeps the last 5 samples of
  a title/series; stepwire keeps all of them.
- Text: ``report_text`` is the text ``"console"`` at the run's auto step (printed too unless
  ``print_console=False``; the level is not stored); ``get_reported_console_output`` reads it back.
- Parameters are the run config, stored flat as ClearML shows them: ``{"Section/name": "value as a string"}``
  (section ``"General"`` by default; None -> ``""``, lists/tuples/dicts -> JSON, enums -> their member name,
  anything else ``str()``). A task keeps a local copy, so ``get_parameters`` is consistent right away. Reading a
  run whose config was logged by plain stepwire flattens nested dicts with ``"/"`` and puts keys without a
  section under ``"General"``.
- ``connect(dict | object | argparse.Namespace | ArgumentParser, name=None)`` returns the object itself (ClearML
  returns a proxy); what changes in it later is recorded at every ``task.flush()`` and at ``close`` (only the
  values that changed since they were last read, so ``set_parameters`` in between is not undone). A namespace
  goes to section ``Args``; a parser's defaults too, and its ``parse_args`` result is captured.
- Argparse: ``Task.init`` (unless ``auto_connect_arg_parser=False``; a dict ``{dest: False}`` leaves arguments
  out) patches ``ArgumentParser.parse_known_args`` (which ``parse_args`` calls) and ``close`` restores it; every
  parse while the task is open records its arguments as ``Args/<dest>``. ClearML patches at import, so it also
  sees a ``parse_args`` before ``Task.init``; here such arguments need ``task.connect(args)``.
- Configuration objects (``connect_configuration(dict | path, name="General")``, ``set_configuration_object``):
  the run meta ``clearml_configurations`` ``{name: {"type", "text", "description"}}``; a dict is kept as JSON
  text (ClearML: HOCON, of which JSON is a subset), a file as its text; ``get_configuration_object(name)``
  returns the text, ``get_configuration_object_as_dict`` parses JSON (or YAML with pyyaml).
- User properties: the run meta ``clearml_user_properties`` ``{name: {"section": "properties", "name",
  "value" (a string), "description"}}``.
- Artifacts (``upload_artifact``, see ``artifacts.py``): each is a stepwire artifact
  ``"clearml/artifacts/<quoted name>/<file>"`` serialised as ClearML does (file as is, folder or wildcard ->
  zip, dict -> ``.json`` or ``.yaml``, numpy -> ``.npz``/``.csv.gz``, DataFrame -> ``.csv.gz``/``.parquet``/
  ``.pickle``, PIL image -> PNG, text -> ``.txt``, a URL -> a link that is never fetched, anything else ->
  pickle), described in the run meta ``clearml_artifacts`` (type, content type, metadata as strings,
  preview). ``task.artifacts[name].get()`` decodes, ``.get_local_copy()`` downloads into
  ``$STEPWIRE_CLEARML_CACHE`` (default ``<tmp>/stepwire-clearml-cache``). ``register_artifact(name, df)`` stores
  the DataFrame now and again at every ``flush`` and at ``close`` (ClearML syncs it in the background).
- Models (``OutputModel(...).update_weights(weights_filename=...)``, ``task.update_output_model``): stepwire
  artifacts ``"clearml/models/<quoted name>/<file>"`` described in the run meta ``clearml_models`` (``kind``
  ``"model"``, framework, tags, comment, design, labels, iteration, id); an update replaces the weights;
  ``task.models`` is ``{"input": [], "output": [Model, ...]}`` (``["output"]["name"]`` works too). The url
  is ``stepwire-artifact://<run id>/<stored name>``. Weights files are never deleted (``auto_delete_file``).
  ``connect_label_enumeration({label: index})`` is the run meta ``clearml_labels`` and the default labels of
  models created after it.
- ``stepwire.compat.clearml.task_parameters``: ``TaskParameters``, ``param``, ``percent_param`` and
  ``range_validator`` as in ClearML, on dataclasses instead of ``attrs`` (checked when an instance is made).
- Queries: ``get_tasks``/``get_task`` take ClearML's tag operators (``"-tag"``, ``"__$all"``/``"__$and"``,
  ``"__$any"``/``"__$or"``, ``"__$not"``) and ``task_filter`` keys ``status`` (ClearML names), ``type``,
  ``tags``, ``id``, ``name``, ``project_name``, ``order_by`` (``created``, ``started``, ``last_update``,
  ``completed``, ``name``, ``status``, ``id``, ``project``; ``"-"`` for descending; ``last_update`` is when the
  run finished, else when it started), ``page_size``/``page``.
- Continuing (``Task.init(continue_last_task=True | task_id | offset)``): the same stepwire run is opened
  again (``stepwire.init(run_id=...)``: the store joins it, as another rank or a resume would), with its
  parameters, progress, configuration objects and user properties; every reported iteration is shifted by
  the offset (default the last reported iteration + 1, ``get_initial_iteration``); texts restart at the run's
  auto step. ClearML's ``reuse_last_task_id`` overwrites an unused previous task; stepwire never overwrites, so
  without ``continue_last_task`` every ``init`` makes a new task.
- Progress is the run meta ``progress`` (an int 0..100); status: ``get_status`` maps stepwire's
  running/finished/failed to ClearML's in_progress/completed/failed.
- Offline mode (``Task.set_offline(True)`` before ``Task.init``, or ``CLEARML_OFFLINE_MODE=1``): the task logs
  through the embedded default into a fresh session folder ``$STEPWIRE_OFFLINE_DIR/<uuid>`` (else
  ``~/.stepwire/offline/<uuid>``), a complete stepwire data directory (collector started on demand, DuckDB store);
  ``task.get_offline_mode_folder()`` returns it and ``Task.get_task(task_id, dir=folder)`` or
  ``stepwire.Api(dir=folder)`` read it. The folder name is a uuid because the run id exists only once the run does.

- Importing an offline session (``Task.import_offline_session(folder_or_zip, address=... | dir=...)``): the
  session's task is logged again into the target store under the same id (or ``previous_task_id``): project,
  name, tags, parameters, meta, scalars (shifted by ``iteration_offset``), texts, artifacts and media records
  (debug samples, plots and tables: the same content, a table decoded and encoded again). Wall times
  become the import's and every rank's points land on rank 0; stepwire histograms (``Run.log_histogram``) in
  a session are not imported (warned about and counted).

Resource monitoring and stdout/stderr are stepwire's own (``system/`` series and the console stream, per rank):
``Task.init(auto_resource_monitoring=False)`` turns the first off, ``auto_connect_streams=False`` (or stdout and
stderr both False) the second.

Accepted and without effect: ``output_uri=True``, ``auto_connect_frameworks`` and ``deferred_init``;
``allow_archived`` of ``get_task``/``get_tasks`` (nothing is archived).

Warned about once per process and counted (``stepwire.compat.clearml.unsupported_counts()``), then ignored:
``output_uri`` naming other storage, ``reuse_last_task_id=<id>`` without ``continue_last_task``,
``continue_last_task`` in offline mode, ``task_filter`` keys and ``order_by`` fields not listed above, an
``extension_name`` ClearML would not take for the object, ``.yaml`` without pyyaml, ``OutputModel``'s
``base_model_id`` and ``update_weights``'s ``upload_uri``/``register_uri``, stepwire histograms of an imported
offline session; ``max_image_history``/``max_history`` >= 0 (stepwire keeps every sample), ``report_table``'s
``extra_layout``, ``Logger.set_default_debug_sample_history`` and ``set_default_upload_destination``.

Not implemented: reporting into a task opened with ``Task.get_task`` (read-only: ``RuntimeError``), input
models (``InputModel``; ``task.models["input"]`` is empty), ``cast=`` when reading parameters, reading debug
samples and plots back through ``Task`` (``get_debug_samples``, ``get_reported_plots``: use ``stepwire.Api``).
``mark_completed``/``mark_failed`` end the run but, unlike ClearML, never terminate the process; an offline
task's session folder is not zipped at ``close`` (zip it yourself, or import the folder).
"""


from stepwire.compat.clearml.logger import Logger
from stepwire.compat.clearml.model import Model, OutputModel
from stepwire.compat.clearml.reports import split_name
from stepwire.compat.clearml.task import Task, TaskTypes
from stepwire.compat.clearml.unsupported import unsupported_counts

__all__ = ["Logger", "Model", "OutputModel", "Task", "TaskTypes", "split_name", "unsupported_counts"]
