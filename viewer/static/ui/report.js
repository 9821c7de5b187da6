// The report panel: being built (issue 6).
"use strict";
