"""The hardware database: accelerators, CPUs, DRAM, SSDs, links, systems, efficiency classes, each
value with its source (hardware_db/README.md is the schema)."""
