"""Common English-language given names and surnames, shipped so names can be found without a model.

The lists are general (frequent US/UK given names and surnames), not tuned to any data set.
``AMBIGUOUS`` holds the names that are also everyday words ("will", "grace", "brown"): those
count as names only after a cue such as "my name is" or when written with a capital letter.
"""

from __future__ import annotations

GIVEN_NAMES: frozenset[str] = frozenset(
    """
aaron abigail adam adrian aisha alan albert alex alexander alexandra alexis alice alicia alison
amanda amber amelia amy ana andrea andrew angela anita ann anna anne annie anthony antonio arthur
ashley audrey austin barbara barry ben benjamin beth betty beverly bill billy bob bobby bonnie
brad bradley brandon brenda brian bridget brittany bruce bryan caleb cameron carl carla carlos
carol caroline carolyn carrie catherine charles charlie charlotte chelsea cheryl chloe chris
christian christina christine christopher cindy claire clara colin connor craig crystal cynthia
dale daniel danielle danny david dawn dean debbie deborah debra denise dennis derek diana diane
dominic donald donna doris dorothy douglas dylan edward elaine eleanor elizabeth ella ellen emily
emma eric erica erin ethan eugene eva evan evelyn fatima fiona frances francis frank gabriel
gail gary gavin george gerald gloria gordon grace graham greg gregory hannah harold harry heather
helen henry holly howard ian isaac isabel isabella jack jackie jacob jacqueline james jamie jane
janet janice jason jean jeff jeffrey jennifer jenny jeremy jerry jesse jessica jill jim jimmy joan
joanne joe joel john johnny jonathan jordan jose joseph joshua joy joyce juan judith judy julia
julie justin karen kate katherine kathleen kathryn kathy katie kayla keith kelly ken kenneth kevin
kim kimberly kyle larry laura lauren leah lee leo leon leonard linda lisa liam logan lori louis
louise lucas lucy luis luke lydia lynn madison maggie malcolm marcus margaret maria marie marilyn
mario mark martha martin mary matthew maureen megan melissa michael michelle mike mildred mohammed
molly monica morgan nancy natalie nathan neil nicholas nicole noah norma oliver olivia omar oscar
owen pamela patricia patrick paul paula peggy peter philip phillip rachel ralph randy raymond
rebecca regina richard rita robert roberto robin roger ronald rose ruby russell ruth ryan sally
samantha samuel sandra sara sarah scott sean sharon shawn sheila shirley simon sophia sophie
stacy stephanie stephen steve steven stuart susan tammy tanya teresa terry theresa thomas tiffany
tim timothy tina todd tom tommy tony tracy travis tyler valerie vanessa victor victoria vincent
virginia walter wayne wendy william willie yvonne zachary zoe
ahmed ali amir anil arjun chen deepak diego elena fernando hiroshi ivan javier jorge kenji lars
li mei mohamed muhammad nadia olga pablo pedro priya rahul raj ravi sanjay sergei sofia sunita
wei yusuf
""".split()
)

SURNAMES: frozenset[str] = frozenset(
    """
adams alexander allen anderson bailey baker barnes bell bennett brooks brown bryant butler
campbell carter castillo chavez clark coleman collins cook cooper cox cruz davies davis diaz
edwards evans fisher flores foster garcia gibson gomez gonzalez graham gray green griffin hall
harris harrison hayes henderson hernandez hill hughes jackson james jenkins johnson jones jordan
kelly kennedy khan kim king lee lewis long lopez marshall martin martinez mason mcdonald miller
mitchell moore morales morgan morris murphy murray myers nelson nguyen ortiz owens parker patel
patterson perez perry peterson phillips powell price ramirez reed reyes reynolds richardson
rivera roberts robinson rodriguez rogers ross russell sanchez sanders scott shaw simmons singh
smith stewart sullivan taylor thomas thompson torres turner walker wallace ward washington
watson white williams wilson wood wright young
ahmed chen dubois fischer gupta hansen hoffman ivanova kowalski kumar larsen muller nakamura
novak obrien o'brien o'connor oconnor petrov rossi schmidt schneider sharma silva tanaka wagner
wang weber yamamoto zhang
""".split()
)

# Names that are also ordinary words: not names on their own in lower-case text.
AMBIGUOUS: frozenset[str] = frozenset(
    """
will may june april august mark bill grace rose joy hope faith ray dawn art pat sue jack frank
rich summer sky iris ivy jean lily holly penny ruby amber chase hunter mason carter parker
taylor austin jordan dean gene guy king lane long young brown white green black gray grey wood
hill rice stone bell cook price ward hall reed cooper baker turner walker miller fisher foster
brooks robin terry lucky don carol sandy destiny crystal harmony
""".split()
)
