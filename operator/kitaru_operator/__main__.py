import sys

from kitaru_operator.main import main

sys.exit(main())
