# C-level interface of fastq._core.select (weighted-fair choice between the priority levels).

cdef enum:
    N_LEVELS = 5

cpdef list plan_levels(object available, object head_age_ms, object credits, object weights,
                       object ageing_ms, object n)
