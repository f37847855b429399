"""Write ``docs/parameters.md``: every parameter of every node, from the nodes' own tables.

    python -m midas_ros.tools.docs_parameters            # regenerate docs/parameters.md
    python -m midas_ros.tools.docs_parameters --check    # exit 1 if the file is out of date

The nodes are the executables of ``midas_ros/executables.py`` that live in ``midas_ros.ros``; a
node's parameters are the module-level tables of ``Param`` rows its module hands to
``declare_parameters`` (defined there or imported, as depth_node imports
``DEPTH_NODE_PARAMS``). Importing a node module needs
rclpy and the message packages, but no node is created and no ROS context is initialised. A new
node or a new table is picked up without touching this file; ``test/test_docs.py`` fails while
the committed file differs from what this writes.
"""
import argparse
import ast
import importlib
import inspect
import os
import sys

from midas_ros.executables import EXECUTABLES
from midas_ros.ros.parameters import Param

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUTPUT = os.path.join('docs', 'parameters.md')
COMMAND = 'python -m midas_ros.tools.docs_parameters'


def _is_table(value):
    return isinstance(value, (tuple, list)) and bool(value) and \
        all(isinstance(row, Param) for row in value)


def _declared_table_names(module):
    """Names of the module's tables handed to ``declare_parameters`` (in source order)."""
    names = []
    for call in ast.walk(ast.parse(inspect.getsource(module))):
        function = getattr(call, 'func', None)
        if getattr(function, 'id', getattr(function, 'attr', None)) != 'declare_parameters':
            continue
        for argument in call.args[1:]:
            names += [n.id for n in ast.walk(argument) if isinstance(n, ast.Name)]
    return names


def node_parameter_tables():
    """``[(node, [Param, ...])]`` in the dispatcher's order, one entry per node that has any.

    A node's rows are those of the tables its module hands to ``declare_parameters`` (so a
    table imported only to borrow rows from is not counted); a module that declares none
    that way contributes every ``Param`` table it holds. Rows are listed once, in table order.
    Raises ImportError where rclpy or a message package is missing.
    """
    tables = []
    for name, target in EXECUTABLES:
        module_name = target.split(':')[0]
        if not module_name.startswith('midas_ros.ros.'):
            continue   # tools: command-line options, not ROS parameters
        module = importlib.import_module(module_name)
        namespace = vars(module)
        declared = [namespace[n] for n in _declared_table_names(module)
                    if _is_table(namespace.get(n))]
        rows = {}
        for table in declared or [value for value in namespace.values() if _is_table(value)]:
            for row in table:
                rows.setdefault(row.name, row)
        if rows:
            tables.append((name, list(rows.values())))
    return tables


def _yaml_value(value):
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, str):
        return f"'{value}'" if value == '' else value
    if isinstance(value, (list, tuple)):
        return '[' + ', '.join(_yaml_value(item) for item in value) + ']'
    return repr(value)


def _type(value):
    if isinstance(value, bool):
        return 'bool'
    if isinstance(value, int):
        return 'int'
    if isinstance(value, float):
        return 'double'
    if isinstance(value, str):
        return 'string'
    if isinstance(value, (list, tuple)):
        if not value:
            # The nodes declare the rows with an empty default as string arrays (rclpy would
            # infer a byte array from []).
            return 'string[]'
        return _type(value[0]) + '[]'
    return type(value).__name__


def _number(value):
    return repr(int(value)) if float(value).is_integer() else repr(value)


def _limits(param):
    parts = []
    if param.choices:
        parts.append('one of ' + ', '.join(f'`{choice}`' for choice in param.choices))
    if param.pattern:
        parts.append(f'matches `{param.pattern}`')
    if param.min is not None and param.max is not None:
        parts.append(f'{_number(param.min)} to {_number(param.max)}')
    elif param.min is not None:
        parts.append(f'>= {_number(param.min)}')
    elif param.max is not None:
        parts.append(f'<= {_number(param.max)}')
    return '; '.join(parts)


def _cell(text):
    # A pipe inside a table cell (code spans included) must be escaped in GitHub Markdown.
    return text.replace('|', '\\|').replace('\n', ' ')


def render(tables):
    """The Markdown text of docs/parameters.md for ``tables`` (see node_parameter_tables)."""
    lines = [
        '# Parameters',
        '',
        '<!-- Generated from the nodes\' parameter tables: do not edit by hand. -->',
        f'<!-- Regenerate with `{COMMAND}` from the repository root. -->',
        '',
        'Every parameter of every node, generated from the tables the nodes declare their',
        'parameters from. Set them with `-p name:=value`, in a YAML parameters file',
        '(`config/<node>.yaml` holds the defaults), or at run time with `ros2 param set` where',
        'the *set* column says `run time` (`restart`: read at start only). A value outside its',
        'limits is rejected with the reason, and a rejected change applies nothing.',
        '',
    ]
    lines += [f'- [{node}](#{node})' for node, _ in tables]
    for node, params in tables:
        lines += ['', f'## {node}', '']
        config = os.path.join('config', f'{node}.yaml')
        if os.path.isfile(os.path.join(REPO, config)):
            lines += [f'Defaults with comments: [`{config}`](../{config}).', '']
        lines += ['| parameter | type | default | limits | set | description |',
                  '|---|---|---|---|---|---|']
        for param in params:
            when = 'restart' if param.read_only else 'run time'
            lines.append('| ' + ' | '.join(_cell(text) for text in (
                f'`{param.name}`', param_type(param), f'`{_yaml_value(param.default)}`',
                _limits(param), when, param.description)) + ' |')
    return '\n'.join(lines) + '\n'


def param_type(param):
    """The ROS parameter type of ``param`` as the generated table names it."""
    return _type(param.default)


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m midas_ros.tools.docs_parameters',
                                     description=__doc__.split('\n')[0])
    parser.add_argument('--check', action='store_true',
                        help=f'exit 1 if {OUTPUT} differs from what would be written')
    args = parser.parse_args(argv)
    text = render(node_parameter_tables())
    path = os.path.join(REPO, OUTPUT)
    if args.check:
        with open(path, encoding='utf-8') as stream:
            current = stream.read()
        if current != text:
            print(f'{OUTPUT} is out of date: run {COMMAND}', file=sys.stderr)
            return 1
        return 0
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w', encoding='utf-8') as stream:
        stream.write(text)
    print(f'wrote {OUTPUT}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
