"""capsim scored against published third-party measurements (``capsim validate --published``)."""
