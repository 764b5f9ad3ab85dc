"""The two stateful objects, written once over the SQL-storage port.

On the edge each is wrapped by a thin Durable Object class; locally each is an in-process
instance over a sqlite3 file.
"""
