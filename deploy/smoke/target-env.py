"""Print the PEP 508 marker environment of this interpreter as JSON (standard library only).

deploy/image-smoke.sh runs it inside the image's base, so that the wheels built on the host are
those the image's Python needs (Debian's 3.11.2 needs async-timeout, the host's 3.11.7 not).
"""

import json
import os
import platform
import sys

version = sys.implementation.version
implementation_version = f"{version.major}.{version.minor}.{version.micro}"
if version.releaselevel != "final":
    implementation_version += f"{version.releaselevel[0]}{version.serial}"
print(
    json.dumps(
        {
            "implementation_name": sys.implementation.name,
            "implementation_version": implementation_version,
            "os_name": os.name,
            "platform_machine": platform.machine(),
            "platform_release": platform.release(),
            "platform_system": platform.system(),
            "platform_version": platform.version(),
            "python_full_version": platform.python_version(),
            "platform_python_implementation": platform.python_implementation(),
            "python_version": ".".join(platform.python_version_tuple()[:2]),
            "sys_platform": sys.platform,
        }
    )
)
