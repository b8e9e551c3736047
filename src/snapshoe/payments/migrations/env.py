from snapshoe.kernel.migrate import run_env
from snapshoe.payments.tables import metadata

run_env(metadata)
