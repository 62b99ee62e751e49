"""Published findings checked on studies: claims files judged held / failed / inconclusive, and reproduction folders.

May import: the base, studies, reports, pipeline, config.
"""
