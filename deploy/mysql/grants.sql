-- Run once by the MySQL image on an empty data directory (/docker-entrypoint-initdb.d).
-- The image has created the `snapshoe` user (MYSQL_USER); `snapshoe migrate` creates one
-- database per service, named <namespace>_<service> (snapshoe_users, snapshoe_orders, ...),
-- so the user may create and own databases with that prefix, and nothing else.
GRANT ALL PRIVILEGES ON `snapshoe\_%`.* TO 'snapshoe'@'%';
