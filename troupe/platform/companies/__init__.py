"""Companies: CRUD, members, metrics, logs, tasks, duplicate, export and import."""
