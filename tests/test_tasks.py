"""Tasks are registered components: the launcher's progress line and the grid's data check come from the run's
task, so a detection run shows box AP (never a `top1 nan`) and COCO is checked by the detection task."""
import pytest

from lai_bench.config import RunConfig
from lai_bench.data import DatasetNotFoundError
from lai_bench.launch.grid import GridPoint
from lai_bench.launch.launcher import Outcome, ProgressBar
from lai_bench.tasks import ClassificationTask, DetectionTask, list_tasks, task_class
from lai_bench.validate import validate


def spec_of(**kw) -> GridPoint:
    config = validate(RunConfig(**kw))
    return GridPoint(config, config.run_id(), config.name())


def test_the_registry_names_both_tasks_and_their_headlines():
    assert list_tasks() == ["classification", "detection"]
    assert task_class("detection") is DetectionTask and task_class("classification") is ClassificationTask
    assert (DetectionTask.headline_metric, DetectionTask.headline_label) == ("bbox_AP", "box AP")
    assert (ClassificationTask.headline_metric, ClassificationTask.headline_label) == ("top1", "top-1 %")
    with pytest.raises(ValueError, match="unknown task 'segmentation'; allowed: classification, detection"):
        task_class("segmentation")


def test_a_detection_run_s_progress_line_shows_box_ap_and_no_top1():
    lines = []
    bar = ProgressBar(2, lines.append)
    detection = spec_of(task="detection", backbone="imagenet", depth=18, recipe="coco_1x")
    classification = spec_of(method="se")
    bar.finished(Outcome(detection, "completed", summary={"metrics": {"bbox_AP_final": 12.5, "bbox_AP_best": 13.0}}))
    bar.finished(Outcome(classification, "completed", summary={"metrics": {"top1_final": 91.25}}))
    assert "box AP 12.50" in lines[0] and "top1" not in lines[0] and "nan" not in lines[0]
    assert "top-1 % 91.25" in lines[1]


def test_coco_is_checked_by_the_detection_task(tmp_path):
    config = validate(RunConfig(task="detection", backbone="imagenet", depth=18, recipe="coco_1x", dataset="coco",
                                data_root=str(tmp_path)))
    with pytest.raises(DatasetNotFoundError, match="annotations"):
        task_class("detection").check_data(config)
    config = validate(RunConfig(dataset="cifar10", data_root=str(tmp_path)))
    with pytest.raises(DatasetNotFoundError, match="cifar-10-batches-py"):
        task_class("classification").check_data(config)


def test_a_second_default_task_or_a_name_registered_twice_is_refused_and_changes_nothing():
    from lai_bench.tasks import default_task, register_task

    class Other(ClassificationTask):
        pass

    with pytest.raises(ValueError, match="registered as the default, but 'classification' already is"):
        register_task("other_default", default=True)(Other)
    with pytest.raises(ValueError, match="task 'detection' is registered twice"):
        register_task("detection")(Other)
    assert "other_default" not in list_tasks() and default_task() == "classification"
    assert task_class("detection") is DetectionTask
