"""The Legacy Survey bit definitions, shared by `astro_sbgm.io` and `astro_sbgm.surveys`."""

__all__ = ["LEGACY_SURVEY_MASKBITS"]

#: The Legacy Survey ``MASKBITS`` (name -> value ``2**bit``), as defined for
#: DR10 at https://www.legacysurvey.org/dr10/bitmasks/ (bits 0-13 are those of
#: DR9; ``SATUR_I`` and ``ALLMASK_I`` are always zero before DR10).  They apply
#: to HDU 1 of the ``coadd/*/*/*maskbits*`` files and to the ``MASKBITS``
#: columns of the Tractor and sweep catalogues.
LEGACY_SURVEY_MASKBITS = {
    "NPRIMARY": 2 ** 0,    # outside the BRICK_PRIMARY region of the brick
    "BRIGHT": 2 ** 1,      # within half the radius-magnitude locus of a Tycho/Gaia G<13 star
    "SATUR_G": 2 ** 2,     # saturated in at least one g-band image
    "SATUR_R": 2 ** 3,     # saturated in at least one r-band image
    "SATUR_Z": 2 ** 4,     # saturated in at least one z-band image
    "ALLMASK_G": 2 ** 5,   # any ALLMASK_G bit set (bad in all g images)
    "ALLMASK_R": 2 ** 6,   # any ALLMASK_R bit set
    "ALLMASK_Z": 2 ** 7,   # any ALLMASK_Z bit set
    "WISEM1": 2 ** 8,      # in a WISEMASK_W1 bright-star mask
    "WISEM2": 2 ** 9,      # in a WISEMASK_W2 bright-star mask
    "BAILOUT": 2 ** 10,    # in a blob where source fitting bailed out
    "MEDIUM": 2 ** 11,     # within the radius-magnitude locus of a Gaia G<16 star
    "GALAXY": 2 ** 12,     # in an SGA large galaxy
    "CLUSTER": 2 ** 13,    # in a globular cluster
    "SATUR_I": 2 ** 14,    # saturated in at least one i-band image (DR10)
    "ALLMASK_I": 2 ** 15,  # any ALLMASK_I bit set (DR10)
    "SUB_BLOB": 2 ** 16,   # in a large blob split into smaller blobs for processing
}
