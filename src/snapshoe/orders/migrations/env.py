from snapshoe.kernel.migrate import run_env
from snapshoe.orders.tables import metadata

run_env(metadata)
