"""The rules of the poems: regular forms (平仄, 平水韵) and 词 by 词牌. No torch."""
