"""How a request becomes poems: request, processors, constraints, search, planner."""
