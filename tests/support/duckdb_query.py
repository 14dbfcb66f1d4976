"""Runs one SQL query with DuckDB over the lake's Delta tables and prints the rows as JSON.

    python3 duckdb_query.py LAKE_DIR SQL

The tables `readings`, `files` and `aggregates` are views over `delta_scan` of LAKE_DIR's
folders. The Delta extension is the file the `duckdb-ext-delta` package installs (no download).
"""
import glob
import importlib.util
import json
import os
import sys

import duckdb

lake, sql = sys.argv[1], sys.argv[2]
package = importlib.util.find_spec("duckdb_ext").submodule_search_locations[0]
version = "v" + duckdb.__version__
extension = glob.glob(os.path.join(package, "extensions", version, "*", "delta.duckdb_extension"))[0]
con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
con.execute(f"LOAD '{extension}'")
con.execute("SET TimeZone = 'UTC'")
for table in ("readings", "files", "aggregates"):
    path = os.path.join(lake, table)
    if os.path.isdir(os.path.join(path, "_delta_log")):
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM delta_scan('{path}')")
rows = con.execute(sql.replace("{lake}", lake)).fetchall()
print(json.dumps(rows, default=str))
