"""Published findings checked on studies: claims files judged held / failed / inconclusive, and reproduction folders.

May import: studies, reports, run, the root modules.
"""
