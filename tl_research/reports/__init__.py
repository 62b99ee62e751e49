"""Reports of a study: tables from stored trials, report files (md/csv/tex) and plots.

May import: the base, studies, runs.
"""
