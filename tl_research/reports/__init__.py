"""Reports of a study: tables from stored trials, report files (md/csv/tex) and plots.

May import: studies, runs, stats, the root modules.
"""
