from snapshoe.kernel.migrate import run_env
from snapshoe.users.tables import metadata

run_env(metadata)
