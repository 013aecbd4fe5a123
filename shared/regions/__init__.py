"""Region proposals, used by two stages: `preprocess regions` writes them into the region store and
`evaluate proposals` scores them against ground truth. The SLIC port, the paper's grouping
(docs/design.md#region-grouping), the depth sources and the one config both commands share."""
