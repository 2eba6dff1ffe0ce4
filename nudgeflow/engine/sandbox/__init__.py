"""Budgets for template renders and `when` expressions: loops, sizes, output, wall time.

The immutable sandbox keeps templates away from Python internals, not from the worker's CPU
and memory: `{{ (((10**64)**64)**64)**64 }}` ran for 25 s, two nested loops over
`range(user.n)` for 4 s, and `{{ '%0200000000d' % 1 }}` built 200 MB in a tenth of a second.
So every render and every expression evaluation runs under a `Budget` that template content
cannot switch off (budget.py: the limits, their defaults, `BudgetExceeded`).

The modules, each below the ones that use it (imports only go down this list):

- budget.py: `Budget`, the limit names, `BudgetExceeded`, `Unmetered`, `limit_of`;
- sizes.py: how long a value would print, predicted without building it;
- meter.py: the `Meter` of the render in progress (a context variable), `run_metered`;
- operators.py / methods.py: the checks before `**`, `*`, `+` and before str/bytes/int
  methods that can build big values;
- filters.py: Jinja's filters wrapped with their checks, ticks and result checks;
- formatting.py: the sandbox's `str.format`, each field checked before it is formatted;
- codegen.py: the code generator (a tick per loop iteration, checked `~`, displays and
  output) and the hooks its generated code calls;
- light.py: which templates may render with no meter at all;
- environment.py: `BudgetedSandbox`, the environment that puts all of the above together.

Over budget raises `BudgetExceeded`, whose message names the limit ("budget exceeded:
loop_iterations > 100000"); templates.py turns it into a TemplateError with that reason and
`limit`, expressions.py into a false condition with that reason (`limit_of` reads it back);
the engine (firing.py, runs.py) records either as decision `render_failed`, reason the limit.

This package is a docstring only: import from the module that defines a name.
"""
