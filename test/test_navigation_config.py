"""config/nav2_costmap.yaml and config/midas.rviz name only topics, frames and fields the nodes
publish."""
from pathlib import Path

import numpy as np
import yaml

from midas_ros.ros.conversions import OrganizedCloudBuilder
from midas_ros.ros.depth_messages import DEPTH_TOPICS
from midas_ros.ros.depth_camera import DEFAULT_FRAME
from midas_ros.ros.navigation_outputs import NAVIGATION_TOPICS, UnorganizedCloudBuilder
from std_msgs.msg import Header

CONFIG = Path(__file__).resolve().parent.parent / 'config'
PUBLISHED = {f'/{topic}' for topic in {*DEPTH_TOPICS, *NAVIGATION_TOPICS}} | {
    '/image', '/obstacles/markers'}
TYPES = {'/depth/obstacle_points': 'PointCloud2', '/depth/points': 'PointCloud2',
         '/depth/scan': 'LaserScan'}


def _sources(tree):
    """Every costmap observation source (a dict with a 'topic') in the file."""
    if isinstance(tree, dict):
        if 'topic' in tree:
            yield tree
        for value in tree.values():
            yield from _sources(value)


def test_nav2_sources_use_published_topics_and_types():
    sources = list(_sources(yaml.safe_load((CONFIG / 'nav2_costmap.yaml').read_text())))
    assert len(sources) == 6
    for source in sources:
        assert source['topic'] in PUBLISHED, source['topic']
        assert source['data_type'] == TYPES[source['topic']]
    marking = {s['topic'] for s in sources if s['marking']}
    assert marking == {'/depth/obstacle_points'}        # the floor is never marked
    # The heights the layers filter on are those the obstacle cloud keeps (defaults).
    from midas_ros.navigation import NavigationSettings
    settings = NavigationSettings()
    for source in sources:
        if source['marking']:
            assert source['min_obstacle_height'] >= settings.obstacle_min_height
            assert source['max_obstacle_height'] <= settings.obstacle_max_height


def test_obstacle_points_have_the_fields_the_layers_read():
    msg = UnorganizedCloudBuilder().build(np.zeros((3, 3), np.float32), Header())
    assert [f.name for f in msg.fields] == ['x', 'y', 'z'] and msg.height == 1


def test_rviz_shows_published_topics():
    config = yaml.safe_load((CONFIG / 'midas.rviz').read_text())
    manager = config['Visualization Manager']
    topics = [d['Topic']['Value'] for d in manager['Displays'] if 'Topic' in d]
    assert '/depth/obstacle_points' in topics and '/depth/scan' in topics
    assert set(topics) <= PUBLISHED
    # Frames: base_footprint is the ground frame (REP 105) depth/obstacle_points is published in
    # with scale.ground_frame: base_footprint; camera_source publishes it on /tf_static.
    assert manager['Global Options']['Fixed Frame'] == 'base_footprint'
    axes = [d for d in manager['Displays'] if d['Class'] == 'rviz_default_plugins/Axes']
    assert [d['Reference Frame'] for d in axes] == [DEFAULT_FRAME]
    # Fields the cloud displays colour by: rgb of depth/points (cloud.color, default on) and
    # the z of depth/obstacle_points.
    colored = OrganizedCloudBuilder(color=True).build(np.zeros((2, 2, 3), np.float32),
                                                      Header(), np.zeros((2, 2, 3), np.uint8))
    fields = {'/depth/points': {f.name for f in colored.fields}, '/depth/obstacle_points':
              {'x', 'y', 'z'}}
    for display in manager['Displays']:
        topic = display.get('Topic', {}).get('Value')
        if display['Class'] == 'rviz_default_plugins/PointCloud2':
            needed = {'RGB8': {'rgb'}, 'AxisColor': {display.get('Axis', 'Z').lower()}}
            assert needed[display['Color Transformer']] <= fields[topic], display['Name']
