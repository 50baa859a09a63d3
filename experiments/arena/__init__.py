"""An arena over three models judged by a grader through the arena page (see README.md)."""
