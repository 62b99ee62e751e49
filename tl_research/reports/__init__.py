"""Reports of a study: tables from stored trials, report files (md/csv/tex) and plots.

May import: the base, data, studies, runtime. (data: the name of the shifted test sets' metric.)
"""
