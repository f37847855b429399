"""The documentation against the code: what the nodes declare is documented, links resolve,
and the commands in README.md's and docs/'s code blocks name things that exist.

Everything is discovered from the code, not listed here, so a new node, topic, parameter or
launch argument fails this test until it is documented:

- topics: the names given as the topic of every ``create_*publisher``,
  ``create_subscription`` and ``subscribe`` call in ``midas_ros/ros/``, as far as the code
  says them plainly (see ``_Names``: literals, f-string tails, module-level topic tables and
  the rows a loop runs over, helper calls, ``self`` properties);
- parameters: every ``Param`` table of every node (``midas_ros.tools.docs_parameters``), plus
  any ``declare_parameter('name', ...)`` outside a table;
- launch arguments: every ``DeclareLaunchArgument('name', ...)`` in ``launch/*.launch.py``.

No ROS graph is needed: the node modules are imported (for their tables) or parsed, never run.
"""
import ast
import functools
import os
import re
import shlex
from pathlib import Path

import pytest

from midas_ros.executables import EXECUTABLES
from midas_ros.tools import docs_parameters

REPO = Path(__file__).resolve().parent.parent
ROS_DIR = REPO / 'midas_ros' / 'ros'
DOCS = sorted((REPO / 'docs').glob('*.md'))
PAGES = [REPO / 'README.md'] + DOCS
REGENERATE = f'.venv/bin/python -m {docs_parameters.__name__}'

# Topic argument position of the calls that create publishers and subscriptions.
_CREATE = re.compile(r'create_\w*(publisher|subscription)$')
_SUBSCRIBE = re.compile(r'(subscribe|MatchingSubscription)$')
_TOPIC = re.compile(r'/?[A-Za-z_~][A-Za-z0-9_]*(/[A-Za-z0-9_]+)*')


# -- what the documentation says ---------------------------------------------------------------

def _text(path):
    return path.read_text(encoding='utf-8')


def _strip_code_blocks(text):
    """Markdown without its fenced code blocks (links and headings there are not links)."""
    return re.sub(r'^[ \t]*(```|~~~).*?^[ \t]*\1[^\n]*$', '', text, flags=re.S | re.M)


def _code_blocks(text, languages=('bash', 'sh', 'shell', 'console')):
    return [body for language, body in
            re.findall(r'^[ \t]*```(\w*)[^\n]*\n(.*?)^[ \t]*```', text, flags=re.S | re.M)
            if language in languages]


def _code_spans():
    """Every inline code span and code-block line of README.md and docs/, as one list."""
    spans = []
    for page in PAGES:
        text = _text(page)
        spans += re.findall(r'`([^`\n]+)`', _strip_code_blocks(text))
        for body in _code_blocks(text, languages=('bash', 'sh', 'shell', 'console', '', 'yaml')):
            spans += body.splitlines()
    return spans


SPANS = _code_spans()


def _documented(name):
    """``name`` is written as code somewhere (a span may carry a prefix such as ``<cam>/``)."""
    pattern = re.compile(r'(^|[/\s(])' + re.escape(name.lstrip('/')) + r'($|[\s:=),])')
    return any(pattern.search(span) for span in SPANS)


# -- what the code declares --------------------------------------------------------------------

def _modules(directory):
    return {path: ast.parse(_text(path)) for path in sorted(directory.rglob('*.py'))}


class _Names:
    """The topic names an expression can evaluate to, where the code says so plainly.

    Follows literals, f-string tails, ``prefix + name``, conditionals, helper calls (their
    string arguments), local assignments, loop variables over module-level tables (a dict's
    keys, a tuple's items, a field of the dataclass rows a loop runs over), comprehensions and
    ``self.<property>``. Anything else yields nothing, which the sanity test notices.
    """

    def __init__(self):
        self.constants, self.fields = {}, {}
        for tree in _modules(REPO / 'midas_ros').values():
            for statement in tree.body:
                if isinstance(statement, ast.ClassDef):
                    self.fields[statement.name] = [
                        s.target.id for s in statement.body
                        if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)]
                if not isinstance(statement, ast.Assign):
                    continue
                for target in statement.targets:
                    if isinstance(target, ast.Name):
                        self.constants[target.id] = statement.value
                    elif isinstance(target, ast.Tuple) and \
                            isinstance(statement.value, ast.Tuple):
                        for name, value in zip(target.elts, statement.value.elts):
                            if isinstance(name, ast.Name):
                                self.constants[name.id] = value
        self.module = None

    def of(self, node, scope, depth=0):
        if depth > 8 or node is None:
            return set()
        deeper = depth + 1
        if isinstance(node, ast.Constant):
            return {node.value} if isinstance(node.value, str) else set()
        if isinstance(node, ast.JoinedStr):      # f'{prefix}depth/image': the literal tail
            tail = ''
            for part in reversed(node.values):
                if not isinstance(part, ast.Constant):
                    break
                tail = str(part.value) + tail
            return {tail.lstrip('/')} if tail.lstrip('/') else set()
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return {name.lstrip('/') for name in self.of(node.right, scope, deeper)}
        if isinstance(node, ast.IfExp):
            return self.of(node.body, scope, deeper) | self.of(node.orelse, scope, deeper)
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return self._union(node.elts, scope, deeper)
        if isinstance(node, ast.Dict):
            return self._union(node.keys, scope, deeper)
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp)):
            return self.of(node.elt, node, deeper)
        if isinstance(node, ast.DictComp):
            return self.of(node.key, node, deeper)
        if isinstance(node, ast.Call):
            if getattr(node.func, 'id', None) in self.fields:
                return set()                     # a table row: its fields are read by name
            arguments = list(node.args) + [keyword.value for keyword in node.keywords]
            return self._union(arguments, scope, deeper)
        if isinstance(node, ast.Attribute):
            return self._attribute(node, scope, deeper)
        if isinstance(node, ast.Name):
            found = set()
            for value in self._bindings(node.id, scope):
                found |= self.of(value, scope, deeper)
            for iterable in self._loops(node.id, scope):
                found |= self._union(self._items(iterable, scope), scope, deeper)
            if not found and node.id in self.constants:
                found = self.of(self.constants[node.id], scope, deeper)
            return found
        return set()

    def _union(self, nodes, scope, depth):
        return set().union(set(), *(self.of(n, scope, depth) for n in nodes))

    def _bindings(self, name, scope):
        return [n.value for n in ast.walk(scope) if isinstance(n, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in n.targets)]

    def _loops(self, name, scope):
        """What loops binding ``name`` run over (``for name, x in table.items()``: the table)."""
        iterables = []
        for loop in ast.walk(scope):
            if not isinstance(loop, (ast.For, ast.comprehension)):
                continue
            target, iterable = loop.target, loop.iter
            if isinstance(target, ast.Name) and target.id == name:
                iterables.append(iterable)
            elif isinstance(target, ast.Tuple) and target.elts and \
                    isinstance(target.elts[0], ast.Name) and target.elts[0].id == name and \
                    isinstance(iterable, ast.Call) and \
                    getattr(iterable.func, 'attr', None) == 'items':
                iterables.append(iterable.func.value)
        return iterables

    def _items(self, iterable, scope):
        """The element expressions of a loop's iterable (a literal or a module-level table)."""
        if isinstance(iterable, ast.Name):
            iterable = self.constants.get(iterable.id, iterable)
        if isinstance(iterable, (ast.Tuple, ast.List, ast.Set)):
            return list(iterable.elts)
        if isinstance(iterable, ast.Dict):
            return list(iterable.keys)
        return [iterable]

    def _attribute(self, node, scope, depth):
        if isinstance(node.value, ast.Name) and node.value.id == 'self' and self.module:
            found = set()                        # self.<property or method>: what it returns
            for function in ast.walk(self.module):
                if isinstance(function, ast.FunctionDef) and function.name == node.attr:
                    for ret in (n for n in ast.walk(function) if isinstance(n, ast.Return)):
                        found |= self.of(ret.value, function, depth)
            return found
        if isinstance(node.value, ast.Name):     # row.field, row looping over a table of rows
            found = set()
            for iterable in self._loops(node.value.id, scope):
                for row in self._items(iterable, scope):
                    found |= self._field(row, node.attr, scope, depth)
            return found
        return set()

    def _field(self, row, field, scope, depth):
        if not isinstance(row, ast.Call) or getattr(row.func, 'id', None) not in self.fields:
            return set()
        for keyword in row.keywords:
            if keyword.arg == field:
                return self.of(keyword.value, scope, depth)
        names = self.fields[row.func.id]
        if field in names and names.index(field) < len(row.args):
            return self.of(row.args[names.index(field)], scope, depth)
        return set()


def _call_name(call):
    function = call.func
    return function.attr if isinstance(function, ast.Attribute) else getattr(function, 'id', '')


def _topic_argument(call):
    name = _call_name(call)
    index = 1 if _CREATE.search(name) else 2 if _SUBSCRIBE.search(name) else None
    if index is None:
        return None
    for keyword in call.keywords:
        if keyword.arg == 'topic':
            return keyword.value
    return call.args[index] if len(call.args) > index else None


def declared_topics():
    """``{topic: 'file.py'}`` of every topic a node in midas_ros/ros publishes or subscribes."""
    names = _Names()
    topics = {}
    for path, tree in _modules(ROS_DIR).items():
        names.module = tree
        scopes = [n for n in ast.walk(tree)
                  if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))] or [tree]
        for scope in scopes:
            for call in (n for n in ast.walk(scope) if isinstance(n, ast.Call)):
                for name in names.of(_topic_argument(call), scope):
                    if _TOPIC.fullmatch(name):
                        topics.setdefault(name, path.name)
                if _call_name(call) == 'transport_topic' and len(call.args) > 1:
                    # qos.transport_topic(node, base, transport): base and base/compressed.
                    for name in names.of(call.args[1], scope):
                        if _TOPIC.fullmatch(name):
                            topics.setdefault(name, path.name)
                            topics.setdefault(f'{name}/compressed', path.name)
    return topics


@functools.lru_cache(maxsize=None)
def _tables():
    return tuple(docs_parameters.node_parameter_tables())


def declared_parameters():
    """``{parameter: node}`` from the nodes' tables and any declare_parameter outside them."""
    params = {param.name: node for node, table in _tables() for param in table}
    for path, tree in _modules(ROS_DIR).items():
        for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
            if _call_name(call) == 'declare_parameter' and call.args and \
                    isinstance(call.args[0], ast.Constant):
                params.setdefault(call.args[0].value, path.stem)
    return params


def launch_arguments():
    """``{launch file: {argument, ...}}`` of launch/*.launch.py."""
    arguments = {}
    for path in sorted((REPO / 'launch').glob('*.launch.py')):
        names = set()
        for call in (n for n in ast.walk(ast.parse(_text(path))) if isinstance(n, ast.Call)):
            if _call_name(call) == 'DeclareLaunchArgument' and call.args and \
                    isinstance(call.args[0], ast.Constant):
                names.add(call.args[0].value)
            if _call_name(call) == 'network_arguments':
                # launch_support.network_arguments(): model, device, pretrained.
                from midas_ros.ros.launch_support import NETWORK_ARGUMENTS
                names.update(argument for argument, _, _ in NETWORK_ARGUMENTS)
        arguments[path.name] = names
    return arguments


# -- declared things are documented ------------------------------------------------------------

def test_discovery_finds_what_the_nodes_are_known_to_declare():
    """The discovery itself works (an empty discovery would let everything pass)."""
    topics = declared_topics()
    for topic in ('image', 'image/compressed', 'camera_info', 'anchors', 'depth/image',
                  'depth/points', 'depth/scan', '/diagnostics', 'detections', 'obstacles',
                  'obstacles/nearest', 'ground_truth/depth'):
        assert topic in topics, topic
    params = declared_parameters()
    for name in ('model.name', 'scale.mode', 'target_frame', 'source', 'topics', 'autostart'):
        assert name in params, name
    assert {'image', 'camera_info', 'model', 'device'} <= launch_arguments()['depth.launch.py']


def test_every_topic_is_documented():
    missing = sorted(f'{topic} ({where})' for topic, where in declared_topics().items()
                     if not _documented(topic))
    assert not missing, f'topics not in README.md or docs/ (as `code`): {missing}'


def test_every_parameter_is_documented():
    missing = sorted(f'{name} ({node})' for name, node in declared_parameters().items()
                     if not _documented(name))
    assert not missing, f'parameters not in README.md or docs/ (as `code`): {missing}'


def test_every_launch_file_and_argument_is_documented():
    readme = _text(REPO / 'README.md')
    missing = []
    for launch_file, names in launch_arguments().items():
        if f'`{launch_file}`' not in readme:
            missing.append(launch_file)
        missing += [f'{launch_file}: {name}' for name in sorted(names)
                    if not _documented(name) and f'{name}:=' not in readme]
    assert not missing, f'launch files or arguments not documented: {missing}'


def test_every_executable_is_documented():
    missing = [name for name, _ in EXECUTABLES if not _documented(name)]
    assert not missing, f'executables not in README.md or docs/: {missing}'


def test_parameters_md_is_generated_from_the_current_tables():
    expected = docs_parameters.render(list(_tables()))
    current = _text(REPO / docs_parameters.OUTPUT)
    assert current == expected, (
        f'{docs_parameters.OUTPUT} is out of date with the parameter tables: regenerate it with '
        f'`{REGENERATE}` (from the repository root) and commit the result')


def test_parameter_names_in_readme_tables_exist():
    """A `name` in a README table's parameter column is a parameter some node declares."""
    params = declared_parameters()
    wrong = []
    for table in re.findall(r'((?:^\|.*\|\n)+)', _text(REPO / 'README.md'), flags=re.M):
        rows = [[cell.strip() for cell in row.strip('|').split('|')]
                for row in table.strip().splitlines()]
        if 'parameter' not in rows[0]:
            continue
        column = rows[0].index('parameter')
        for row in rows[2:]:
            wrong += [name for name in re.findall(r'`([^`]+)`', row[column])
                      if name not in params]
    assert not wrong, f'README names parameters no node declares: {wrong}'


# -- links -------------------------------------------------------------------------------------

def _slug(heading):
    """GitHub's anchor for a heading: rendered text, lower case, punctuation dropped."""
    text = re.sub(r'\[([^\]]*)\]\([^)]*\)', r'\1', heading)   # links: their text
    text = text.replace('`', '').strip().lower()
    text = re.sub(r'[^\w\- ]', '', text)
    return text.replace(' ', '-')


def _anchors(path):
    anchors, seen = set(), {}
    for heading in re.findall(r'^#{1,6}\s+(.*?)\s*#*$', _strip_code_blocks(_text(path)), re.M):
        slug = _slug(heading)
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f'{slug}-{count}')
    return anchors


def _links(path):
    text = re.sub(r'`[^`\n]*`', '', _strip_code_blocks(_text(path)))
    return re.findall(r'!?\[[^\]]*\]\(([^)\s]+)(?:\s+"[^"]*")?\)', text)


@pytest.mark.parametrize('page', PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_and_anchor_resolves(page):
    broken = []
    for link in _links(page):
        if re.match(r'[a-z]+:', link):    # http(s), mailto: not checked offline
            continue
        target, _, anchor = link.partition('#')
        path = (page.parent / target).resolve() if target else page
        if not path.exists():
            broken.append(f'{link}: no such file')
        elif anchor and path.suffix == '.md' and anchor not in _anchors(path):
            broken.append(f'{link}: no heading with that anchor in {path.name}')
        elif REPO not in path.parents and path != REPO:
            broken.append(f'{link}: outside the repository')
    assert not broken, f'{page.name}: {broken}'


def test_no_path_outside_the_repository():
    outside = [f'{page.name}: {match}' for page in PAGES
               for match in re.findall(r'\.\./shared\S*|/work/\S+|/tmp/\S+', _text(page))]
    assert not outside, outside


# -- commands ----------------------------------------------------------------------------------

def _dev_commands():
    tree = ast.parse(_text(REPO / 'dev.py'))
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == 'commands' for t in node.targets):
            return {key.value for key in node.value.keys}
    raise AssertionError('dev.py has no commands table')


def _module_strings(module_name):
    """Every string constant of a module's source and of the package modules it imports from
    (a tool may take shared options from a common parser module): its command-line options
    among them."""
    path = REPO / (module_name.replace('.', '/') + '.py')
    tree = ast.parse(_text(path))
    strings = {n.value for n in ast.walk(tree)
               if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or '').startswith('midas_ros'):
            imported = REPO / (node.module.replace('.', '/') + '.py')
            if imported.is_file():
                strings |= {n.value for n in ast.walk(ast.parse(_text(imported)))
                            if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    return strings


def _commands(text):
    """Simple commands of the bash blocks: continuations joined, comments, &&, ; and | split."""
    for body in _code_blocks(text):
        for line in body.replace('\\\n', ' ').splitlines():
            line = re.sub(r'(^|\s)#.*$', '', line).strip()
            for command in re.split(r'&&|;|\|(?![^\[]*\])', line):
                tokens = shlex.split(command)
                while tokens and re.fullmatch(r'[A-Z_]+=\S*', tokens[0]):
                    tokens = tokens[1:]     # VAR=value prefixes
                if tokens:
                    yield command.strip(), tokens


_EXTERNAL = {'mkdir', 'cd', 'git', 'rosdep', 'colcon', 'source', 'pip', 'curl', 'export',
             'rviz2'}


def _check_ros_args(tokens, node, problems, command):
    for flag, value in zip(tokens, tokens[1:]):
        name = value.split(':=')[0]
        if flag == '-p' and not _param_of(name, node):
            problems.append(f'{command}: {node} has no parameter {name}')


def _param_of(name, node):
    return any(param.name == name for param in dict(_tables()).get(node, ()))


def _check_command(command, tokens, problems):
    executables = dict(EXECUTABLES)
    launch = launch_arguments()
    word = os.path.basename(tokens[0])
    if word in ('python', 'python3') and tokens[1:2] == ['dev.py']:
        if len(tokens) < 3 or tokens[2] not in _dev_commands():
            problems.append(f'{command}: not a dev.py command')
        return
    if word in ('python', 'python3') and tokens[1:2] == ['-m']:
        module = tokens[2]
        if module != 'midas_ros':
            if not (REPO / (module.replace('.', '/') + '.py')).is_file():
                problems.append(f'{command}: no module {module}')
            return
        if len(tokens) < 4 or tokens[3] not in executables:
            problems.append(f'{command}: not a midas_ros executable')
            return
        name, args = tokens[3], tokens[4:]
        if '--ros-args' in args:
            _check_ros_args(args[args.index('--ros-args'):], name, problems, command)
            args = args[:args.index('--ros-args')]
        options = _module_strings(executables[name].split(':')[0])
        for arg in (a.strip('[]') for a in args):
            option = arg.split('=')[0]
            if option.startswith('--') and option not in options:
                problems.append(f'{command}: {name} has no option {option}')
        return
    if word == 'ros2':
        verb = tokens[1] if len(tokens) > 1 else ''
        if verb == 'launch':
            if tokens[2:3] != ['midas_ros'] or len(tokens) < 4 or tokens[3] not in launch:
                problems.append(f'{command}: not a midas_ros launch file')
                return
            for arg in tokens[4:]:
                if ':=' in arg and arg.split(':=')[0] not in launch[tokens[3]]:
                    problems.append(f'{command}: {tokens[3]} has no argument {arg}')
        elif verb == 'run':
            if tokens[2:3] != ['midas_ros'] or len(tokens) < 4 or tokens[3] not in executables:
                problems.append(f'{command}: not a midas_ros executable')
                return
            _check_ros_args(tokens[4:], tokens[3], problems, command)
        elif verb in ('lifecycle', 'param'):
            nodes = {node for node, _ in _tables()}
            named = [t.lstrip('/').split('/')[-1] for t in tokens[2:] if t.startswith('/')]
            if not named or named[0] not in nodes:
                problems.append(f'{command}: names no midas_ros node')
            elif verb == 'param' and len(tokens) > 4 and not _param_of(tokens[4], named[0]):
                problems.append(f'{command}: {named[0]} has no parameter {tokens[4]}')
        return
    if word not in _EXTERNAL:
        problems.append(f'{command}: {tokens[0]} is neither a project command nor a known tool')
    for token in tokens:       # files of this package the command names
        match = re.search(r'share/midas_ros/(\S+)', token)
        if match and not (REPO / match.group(1)).exists():
            problems.append(f'{command}: the package installs no {match.group(1)}')


@pytest.mark.parametrize('page', PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_command_names_something_that_exists(page):
    problems = []
    for command, tokens in _commands(_text(page)):
        _check_command(command, tokens, problems)
    assert not problems, problems


def test_command_check_catches_what_does_not_exist():
    """The checker fails on a wrong launch argument, executable, option and parameter."""
    wrong = ('ros2 launch midas_ros depth.launch.py no_such_argument:=1\n'
             'ros2 run midas_ros no_such_node\n'
             'python -m midas_ros demo --no-such-option\n'
             'ros2 run midas_ros depth_node --ros-args -p no.such.parameter:=1\n'
             'ros2 lifecycle set /no_such_node configure\n'
             'python3 dev.py no-such-command\n')
    problems = []
    for command, tokens in _commands(f'```bash\n{wrong}```\n'):
        _check_command(command, tokens, problems)
    assert len(problems) == 6, problems
