from snapshoe.kernel.migrate import run_env
from snapshoe.products.tables import metadata

run_env(metadata)
